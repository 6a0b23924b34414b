"""Output stores: Redis (on fakeredis here) and a directory; images are checked before anything is stored."""
from __future__ import annotations

import os
import time
import uuid

import fakeredis
import pytest

from app.images import InvalidImage
from app.outputs import DirectoryOutputStore, RedisOutputStore
from testkit.images import image_bytes


@pytest.fixture
def fake_redis():
    return fakeredis.FakeRedis()


def test_redis_store_keeps_every_image_with_an_expiry(fake_redis):
    stored = RedisOutputStore(expires=60, client=fake_redis).save("job", [image_bytes((32, 16)), image_bytes((8, 8))])
    assert [(s.index, s.width, s.height, s.content_type) for s in stored] == [(0, 32, 16, "image/png"),
                                                                               (1, 8, 8, "image/png")]
    assert RedisOutputStore(60, fake_redis).load("job", 1) == image_bytes((8, 8))
    assert 0 < fake_redis.ttl("t2i:out:job:0") <= 60
    assert RedisOutputStore(60, fake_redis).load("job", 2) is None


def test_nothing_is_stored_when_one_output_is_not_an_image(fake_redis):
    with pytest.raises(InvalidImage):
        RedisOutputStore(60, fake_redis).save("job", [image_bytes((32, 16)), b"<html>not an image</html>"])
    assert fake_redis.keys("t2i:out:*") == []


@pytest.mark.parametrize("damage", ["truncated", "no end marker", "flipped bit"])
def test_damaged_png_outputs_are_refused_without_decoding_them(fake_redis, damage):
    data = image_bytes((64, 64))
    damaged = {"truncated": data[:len(data) // 2], "no end marker": data[:-12],
               "flipped bit": data[:60] + bytes([data[60] ^ 1]) + data[61:]}[damage]
    with pytest.raises(InvalidImage):
        RedisOutputStore(60, fake_redis).save("job", [damaged])
    assert fake_redis.keys("t2i:out:*") == []


def test_directory_store_writes_whole_folders_and_sweeps_old_ones(tmp_path):
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    DirectoryOutputStore(expires=60, root=tmp_path).save(old, [image_bytes((32, 16))])
    past = time.time() - 120
    os.utime(tmp_path / old, (past, past))
    store = DirectoryOutputStore(expires=60, root=tmp_path)
    store.sweep()
    store.save(new, [image_bytes((32, 16)), image_bytes((32, 16))])
    assert store.load(new, 1) == image_bytes((32, 16)) and not (tmp_path / old).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [new]
