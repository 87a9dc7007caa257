"""Renders chat templates with transformers' own renderer, the reference for tests/chat_templates.rs.

    chat_templates.py TEMPLATE_DIR CASES_JSON OUT_JSON

CASES_JSON is a list of {template, messages, tools, kwargs, bos_token, eos_token}; OUT_JSON gets
one {"text": ...} or {"error": ...} per case, in order. The templates are the models' own
(llama.cpp's copies under models/templates/).
"""
import json
import sys
from pathlib import Path

from transformers.utils.chat_template_utils import render_jinja_template


def render(template_dir: Path, case: dict) -> dict:
    source = (template_dir / case["template"]).read_text()
    kwargs = dict(case["kwargs"])
    add_generation_prompt = kwargs.pop("add_generation_prompt", True)
    try:
        texts, _ = render_jinja_template(
            conversations=[case["messages"]],
            tools=case["tools"],
            chat_template=source,
            add_generation_prompt=add_generation_prompt,
            bos_token=case["bos_token"],
            eos_token=case["eos_token"],
            **kwargs,
        )
        return {"text": texts[0]}
    except Exception as e:  # the template's raise_exception, or a failure of its own
        return {"error": f"{type(e).__name__}: {e}"}


def main() -> None:
    template_dir, cases_path, out_path = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    cases = json.loads(Path(cases_path).read_text())
    Path(out_path).write_text(json.dumps([render(template_dir, c) for c in cases]))


if __name__ == "__main__":
    main()
