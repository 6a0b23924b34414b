"""Graph validation with ComfyUI's rules and error shapes (execution.validate_prompt / validate_inputs)."""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from comfysim.catalogue import NODES, NodeSpec

_CONVERTERS: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str}
_LONG_LIST = 20


@dataclass
class Verdict:
    ok: bool
    error: dict[str, Any] | None = None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


def _error(kind: str, message: str, details: str = "", **extra_info: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def _exception_info(ex: BaseException) -> tuple[str, list[str]]:
    return type(ex).__name__, traceback.format_tb(ex.__traceback__)


class _Validator:
    def __init__(self, prompt: dict[str, Any], combos: dict[str, list[str]], file_exists: Callable[[str], bool]):
        self.prompt = prompt
        self.combos = combos
        self.file_exists = file_exists
        self.validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}

    def node(self, unique_id: str) -> tuple[bool, list[dict[str, Any]], str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        inputs = self.prompt[unique_id]["inputs"]
        spec = NODES[self.prompt[unique_id]["class_type"]]
        errors: list[dict[str, Any]] = []
        valid = True
        for name, info in spec.required.items():
            if name not in inputs:
                errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
                continue
            value = inputs[name]
            if isinstance(value, list):
                valid = self._linked_input(name, info, value, errors) and valid
            else:
                self._constant_input(spec.self_validated, inputs, name, info, value, errors)
        for name in spec.self_validated:
            if name in inputs and not isinstance(inputs[name], list) and not self.file_exists(str(inputs[name])):
                errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                     f"{name} - Invalid image file: {inputs[name]}", input_name=name))
        result = (not errors and valid, errors, unique_id)
        self.validated[unique_id] = result
        return result

    def _linked_input(self, name: str, info: list[Any], value: list[Any], errors: list[dict[str, Any]]) -> bool:
        if len(value) != 2:
            errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                 name, input_name=name, input_config=info, received_value=value))
            return True
        linked_id, slot = value
        linked_class = self.prompt[linked_id]["class_type"]
        outputs = NODES[linked_class].outputs
        received = outputs[slot] if isinstance(slot, int) and 0 <= slot < len(outputs) else None
        expected = info[0]
        if received != expected and expected != "*":
            errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                 f"{name}, received_type({received}) mismatch input_type({expected})",
                                 input_name=name, input_config=info, received_type=received, linked_node=value))
            return True
        try:
            return self.node(linked_id)[0]
        except Exception as ex:  # ComfyUI blames the linked node for any exception inside its validation
            kind, tb = _exception_info(ex)
            self.validated[linked_id] = (False, [_error(
                "exception_during_inner_validation", "Exception when validating inner node", str(ex),
                input_name=name, input_config=info, exception_message=str(ex), exception_type=kind,
                traceback=tb, linked_node=value)], linked_id)
            return False

    def _constant_input(self, self_validated: tuple[str, ...], inputs: dict[str, Any], name: str,
                        info: list[Any], value: Any, errors: list[dict[str, Any]]) -> None:
        kind = info[0]
        options = info[1] if len(info) > 1 else {}
        convert = _CONVERTERS.get(kind) if isinstance(kind, str) else None
        if convert is not None:
            try:
                value = convert(value)
                inputs[name] = value
            except Exception as ex:
                errors.append(_error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                                     f"{name}, {value}, {ex}", input_name=name, input_config=info,
                                     received_value=value, exception_message=str(ex)))
                return
            if "min" in options and value < options["min"]:
                errors.append(_error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}",
                                     name, input_name=name, input_config=info, received_value=value))
            if "max" in options and value > options["max"]:
                errors.append(_error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}",
                                     name, input_name=name, input_config=info, received_value=value))
            return
        choices = info[0] if isinstance(kind, list) else self.combos.get(name) if kind == "COMBO" else None
        if choices is None or name in self_validated or value in choices:
            return
        long_list = len(choices) > _LONG_LIST
        shown = f"(list of length {len(choices)})" if long_list else str(choices)
        config = None if long_list else [choices, *info[1:]]
        errors.append(_error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {shown}",
                             input_name=name, input_config=config, received_value=value))


def validate_prompt(prompt: Any, combos: dict[str, list[str]], file_exists: Callable[[str], bool],
                    offered: Mapping[str, NodeSpec]) -> Verdict:
    """Validate an API-format graph against the node classes this ComfyUI offers. Raises (and so answers 500)
    where ComfyUI crashes too."""
    outputs = []
    for node_id in prompt:
        node = prompt[node_id]
        if "class_type" not in node:
            return Verdict(False, _error("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                                         f"Node ID '#{node_id}'"))
        spec = offered.get(node["class_type"])
        if spec is None:
            return Verdict(False, _error("invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.",
                                         f"Node ID '#{node_id}'"))
        if spec.output_node:
            outputs.append(node_id)
    if not outputs:
        return Verdict(False, _error("prompt_no_outputs", "Prompt has no outputs"))
    # ComfyUI collects outputs in a set; every recording with two output nodes lists the later one first.
    outputs.reverse()
    return _validate_outputs(prompt, outputs, _Validator(prompt, combos, file_exists))


def _validate_outputs(prompt: dict[str, Any], outputs: list[str], validator: _Validator) -> Verdict:
    good: list[str] = []
    own_errors: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            valid, reasons, _ = validator.node(output)
        except Exception as ex:
            kind, tb = _exception_info(ex)
            valid, reasons = False, [_error("exception_during_validation", "Exception when validating node", str(ex),
                                            exception_type=kind, traceback=tb)]
            validator.validated[output] = (False, reasons, output)
        if valid:
            good.append(output)
            continue
        if reasons:
            own_errors.append((output, reasons))
            node_errors[output] = {"errors": reasons, "dependent_outputs": [], "class_type": prompt[output]["class_type"]}
        for node_id, (node_valid, node_reasons, _) in validator.validated.items():
            if node_valid or not node_reasons:
                continue
            entry = node_errors.setdefault(node_id, {"errors": node_reasons, "dependent_outputs": [],
                                                     "class_type": prompt[node_id]["class_type"]})
            entry["dependent_outputs"].append(output)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errors in own_errors for e in errors)
        return Verdict(False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
                       [], node_errors)
    return Verdict(True, None, good, node_errors)
