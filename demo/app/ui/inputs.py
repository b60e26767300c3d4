"""The app's input boundary: every input component's value is checked before Gradio converts it, so a bad value from
a client (NaN, 1.5 for a whole number, text for a number, a choice that is not offered, a list for a name) is one
sentence naming the field and its accepted values, with no traceback in the server log.

Gradio's own checks raise `gr.Error` with a traceback printed, and its conversions fail with Python's own text
(`int(round(nan))`: "cannot convert float NaN to integer"); `harden_inputs(app)` puts `check_payload` in front of
each component's `preprocess`. The handlers then check ranges that depend on the model (`demo.core.validate`).
"""

from __future__ import annotations

import math
import types

import gradio as gr

from demo.core.validate import PATH_MAX, show

TEXT_MAX = 4096  # characters in a free-text or custom dropdown value


def _label(block) -> str:
    return str(getattr(block, "label", None) or getattr(block, "elem_id", None) or type(block).__name__)


def _choices(block) -> list:
    return [value for _, value in getattr(block, "choices", None) or []]


def _span(block, whole: bool) -> str:
    lo, hi = getattr(block, "minimum", None), getattr(block, "maximum", None)
    kind = "a whole number" if whole else "a number"
    if lo is not None and hi is not None:
        return f"{kind} in {lo:g}..{hi:g}"
    if lo is not None:
        return f"{kind} ≥ {lo:g}"
    if hi is not None:
        return f"{kind} ≤ {hi:g}"
    return kind


def check_payload(block, payload):
    """None when `payload` is acceptable for `block` (before its own preprocess), else the sentence to show."""
    label = _label(block)
    if isinstance(block, gr.Slider | gr.Number):
        if payload is None and isinstance(block, gr.Number):
            return None
        whole = isinstance(block, gr.Number) and getattr(block, "precision", None) == 0  # sliders: the handlers check
        ok = isinstance(payload, int | float) and not isinstance(payload, bool) and math.isfinite(payload)
        if ok and whole and payload != int(payload):
            ok = False
        lo, hi = getattr(block, "minimum", None), getattr(block, "maximum", None)
        if ok and ((lo is not None and payload < lo) or (hi is not None and payload > hi)):
            ok = False
        return None if ok else f"{label} must be {_span(block, whole)}, got {show(payload)}."
    if isinstance(block, gr.Checkbox):
        return None if payload is None or isinstance(payload, bool) else f"{label} must be true or false, got {show(payload)}."
    if isinstance(block, gr.CheckboxGroup):
        choices = _choices(block)
        if isinstance(payload, list) and all(
            isinstance(v, str | int | float) and not isinstance(v, bool) and v in choices for v in payload
        ):
            return None
        return f"{label} must be a list of values from {', '.join(map(str, choices))}, got {show(payload)}."
    if isinstance(block, gr.Radio | gr.Dropdown):
        choices = _choices(block)
        custom = getattr(block, "allow_custom_value", False)
        items = payload if getattr(block, "multiselect", False) and isinstance(payload, list) else [payload]
        if getattr(block, "multiselect", False) and not isinstance(payload, list | str | type(None)):
            return f"{label} must be a list of choices, got {show(payload)}."
        for v in items:
            if v is None and len(items) == 1:
                continue
            if isinstance(v, bool) or not isinstance(v, str | int | float) or (isinstance(v, float) and not math.isfinite(v)):
                return f"{label} must be {'a name or one of ' if custom else 'one of '}{', '.join(map(str, choices[:12]))}, got {show(v)}."
            if custom and isinstance(v, str) and len(v) > PATH_MAX:
                return f"{label} must be at most {PATH_MAX} characters, got {len(v)}."
            if not custom and v not in choices:
                return f"{label} must be one of {', '.join(map(str, choices))}, got {show(v)}."
        if isinstance(payload, list) and len(payload) > 64:
            return f"{label} must hold at most 64 choices, got {len(payload)}."
        return None
    if isinstance(block, gr.Textbox):
        if payload is None:
            return None
        if not isinstance(payload, str):
            return f"{label} must be text, got {show(payload)}."
        return None if len(payload) <= TEXT_MAX else f"{label} must be at most {TEXT_MAX} characters, got {len(payload)}."
    return None


def _safe_preprocess(self, payload):
    problem = check_payload(self, payload)
    if problem is not None:
        raise gr.Error(problem, print_exception=False)
    try:
        return type(self).preprocess(self, payload)
    except gr.Error as e:  # Gradio's own check: keep the sentence, drop the traceback
        raise gr.Error(str(e), print_exception=False) from None
    except Exception as e:  # noqa: BLE001  (a conversion Gradio did not expect to fail)
        raise gr.Error(
            f"{_label(self)} could not be read ({type(e).__name__}), got {show(payload)}.", print_exception=False
        ) from None


def harden_inputs(app: gr.Blocks) -> gr.Blocks:
    """Put `check_payload` in front of `preprocess` for every input component of every event of `app`."""
    inputs = {id(block): block for fn in app.fns.values() for block in fn.inputs}
    for block in inputs.values():
        if isinstance(block, gr.Number | gr.Slider | gr.Checkbox | gr.CheckboxGroup | gr.Radio | gr.Dropdown | gr.Textbox):
            block.preprocess = types.MethodType(_safe_preprocess, block)
    return app
