#!/usr/bin/env python3
"""Second oracle for the chat-template golden data: Python's Jinja2, configured exactly as
transformers' apply_chat_template configures it (ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks, loop controls and the generation tag; its tojson, raise_exception and strftime_now).

Run after make_chat_golden.mjs (needs the jinja2 Python package, e.g. Debian's python3-jinja2):
  python3 scripts/golden/check_chat_golden_jinja2.py tests/data/chat_templates

@huggingface/jinja (the first oracle) agrees with Jinja2 on what chat templates print, but not
everywhere: it prints True/None/lists the JavaScript way, ignores str.strip's chars argument, and
treats '' != false as false. Where the two differ, transformers' engine is the truth: `expected`
becomes Jinja2's rendering and the JavaScript one is kept as `reference_js`. Snippets the JavaScript
renderer cannot run at all get Jinja2's rendering. Prints a summary of every disagreement.
"""
import datetime
import json
import pathlib
import sys

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class Generation(Extension):
    """transformers' AssistantTracker without the tracking: {% generation %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.datetime.now().strftime(format)


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
ENV.filters["tojson"] = tojson
ENV.globals["raise_exception"] = raise_exception
ENV.globals["strftime_now"] = strftime_now


def render(source, variables):
    try:
        return {"expected": ENV.from_string(source).render(**variables)}
    except jinja2.exceptions.TemplateError as e:
        if type(e) is jinja2.exceptions.TemplateError:  # raise_exception
            return {"expected_error": str(e.message)}
        return {"failure": f"{type(e).__name__}: {e}"}
    except Exception as e:  # noqa: BLE001 - report any engine failure
        return {"failure": f"{type(e).__name__}: {e}"}


def special_tokens(config):
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        v = config.get(key)
        if v is None:
            continue
        out[key] = v if isinstance(v, str) else v["content"]
    return out


def template_source(config):
    t = config["chat_template"]
    return t if isinstance(t, str) else next(x["template"] for x in t if x["name"] == "default")


def check_family(folder):
    config = json.loads((folder / "tokenizer_config.json").read_text())
    source = template_source(config)
    cases_path = folder / "cases.json"
    cases = json.loads(cases_path.read_text())
    differing = []
    for case in cases:
        variables = {**special_tokens(config), "messages": case["messages"],
                     "add_generation_prompt": case["add_generation_prompt"], **case["kwargs"]}
        r = render(source, variables)
        if "failure" in r:
            raise SystemExit(f"{folder.name}/{case['name']}: Jinja2 failed: {r['failure']}")
        js = {k: case[k] for k in ("expected", "expected_error") if k in case}
        if r != js:
            differing.append(case["name"])
            case.pop("expected", None)
            case.pop("expected_error", None)
            case["reference_js"] = js
            case.update(r)
    cases_path.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    print(f"{folder.name}: {len(cases)} cases; Jinja2 differs from @huggingface/jinja on {len(differing)}: {differing}")


def check_snippets(path):
    snippets = json.loads(path.read_text())
    kept = []
    changed = 0
    for s in snippets:
        r = render(s["template"], s["context"])
        if "expected" not in r:
            print(f"snippet left out, Jinja2 cannot render it either: {s['template']!r}: {r}")
            continue
        if s.get("expected") != r["expected"]:
            changed += 1
            s["reference_js"] = s.pop("expected", None) or s.pop("reference_error", None)
            s.pop("reference_error", None)
            s["expected"] = r["expected"]
        kept.append(s)
    path.write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    print(f"snippets: {len(kept)}; Jinja2's rendering used for {changed} the JavaScript renderer got wrong or could not run")


def main():
    root = pathlib.Path(sys.argv[1])
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        check_family(folder)
    check_snippets(root / "snippets.json")


if __name__ == "__main__":
    main()
