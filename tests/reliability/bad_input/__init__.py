"""Bad input, property-based: whatever arrives at the web tier, the answer is a job or a 4xx JSON error.

For `POST /api/jobs` and the simple API's `POST /generate`: random JSON, the templates' fields with random
values (each template's fields read from its shipped declarations, their rules from the README), wrong templates,
huge and non-finite numbers, deep nesting, invalid UTF-8, random bytes under random content types, random
multipart forms and files, uploads to templates that take none, raw workflows without the scope, bodies over
MAX_CONTENT_LENGTH, broken and oversized images. The property, checked on every example:

- the answer is 202 (/api/jobs) or 200 (/generate) naming a job that GET /api/jobs/<id> reports QUEUED, and
  exactly that job was added to the broker list and the job records; or
- a 4xx with a JSON body {"error": {"code", "message"}}, and the broker list (LLEN of the Celery queue) and
  the job records (the ready index, recent) are unchanged. Never a 5xx. Which 4xx is checked where it is known:
  400 for a body that is not JSON or not an object and for invalid images, 422 invalid_request naming exactly
  the bad fields for a well-formed request whose fields are wrong, 403 for a raw workflow, 413, 415.

For every route that takes an id or an image index: ids with traversal, encoded slashes, NUL, unicode,
quotes, very long strings and Redis glob characters get 404 JSON (405 for a wrong method), never a 5xx and
never another job's data; and GET /api/jobs?limit=... is 200 or 400.

Hypothesis runs inside each test (so fixtures are set up once per test), derandomized and bounded; Redis is
emptied before each example. Each test ends with a sanity check that a valid request is accepted, and counts
its outcomes so a test that only ever saw one kind of answer fails. Each bug these tests found (and that was
fixed) keeps a test of its own, and its trigger stays out of the general properties.
"""
