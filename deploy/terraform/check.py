#!/usr/bin/env python3
"""Offline checks of deploy/terraform (terraform itself cannot run here: no provider downloads).

1. Every .tf file (and terraform.tfvars.example) parses with python-hcl2.
2. Structure, per module directory (the root and modules/*):
   - `terraform` pins required_version and every required provider's source and version, and
     every resource/data type's provider is among them;
   - every variable has a type and a description, every output a description and a value;
   - every `var.X`, `local.X`, `module.M.O`, resource and data source referenced is declared;
   - every module call's arguments are variables of the called module, and it passes every
     variable that has no default;
   - terraform.tfvars.example sets only variables of the root module.
3. Provider schema (with --schema DIR, DIR being the `lib` folder of the npm package
   @cdktf/provider-google, whose TypeScript declarations carry the hashicorp/google schema of one
   provider version): every argument and nested block of every google_* resource and data source
   exists in that schema at its place, required arguments are set, and every attribute read from a
   resource (`google_x.name.attr`) exists.
4. Checkov skips: every `checkov:skip=` comment gives a reason, and every skipped check (inline or
   --skip-ids from the check script) is explained in README.md's "checkov" section.

Prints counts; exits 1 on any problem.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import hcl2

META_RESOURCE = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
META_MODULE = {"source", "version", "count", "for_each", "providers", "depends_on"}
OUTPUT_KEYS = {"value", "description", "sensitive", "depends_on", "precondition", "ephemeral"}
VARIABLE_KEYS = {"type", "description", "default", "validation", "sensitive", "nullable", "ephemeral"}

problems: list[str] = []


def problem(where: str, msg: str) -> None:
    text = f"{where}: {msg}"
    if text not in problems:
        problems.append(text)


def unquote(s):
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def blocks(value):
    """The instances of a block (python-hcl2 gives a list of dicts marked __is_block__)."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    if isinstance(value, dict):
        return [value]
    return []


def is_block(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def expressions(value):
    """Every ${...} expression in a parsed value (string literals outside ${} are not code)."""
    if isinstance(value, str):
        i = 0
        while True:
            start = value.find("${", i)
            if start < 0:
                return
            depth, j = 0, start + 1
            while j < len(value):
                if value[j] == "{":
                    depth += 1
                elif value[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            yield value[start + 2 : j]
            i = j + 1
    elif isinstance(value, dict):
        for k, v in value.items():
            if not (isinstance(k, str) and k.startswith("__")):
                yield from expressions(v)
    elif isinstance(value, list):
        for v in value:
            yield from expressions(v)


class Module:
    def __init__(self, path: Path):
        self.path = path
        self.variables: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        self.locals: set[str] = set()
        self.resources: dict[tuple[str, str], dict] = {}
        self.data: dict[tuple[str, str], dict] = {}
        self.calls: dict[str, dict] = {}
        self.terraform: list[dict] = []
        self.files: dict[str, dict] = {}


def load_module(path: Path, root: Path) -> Module:
    m = Module(path)
    for f in sorted(path.glob("*.tf")):
        rel = str(f.relative_to(root))
        try:
            with open(f, encoding="utf-8") as fh:
                doc = hcl2.load(fh)
        except Exception as e:  # python-hcl2 raises lark errors of several kinds
            problem(rel, f"does not parse: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        m.files[rel] = doc
        for block in doc.get("variable", []):
            for name, body in block.items():
                m.variables[unquote(name)] = dict(body, __file=rel)
        for block in doc.get("output", []):
            for name, body in block.items():
                m.outputs[unquote(name)] = dict(body, __file=rel)
        for block in doc.get("locals", []):
            m.locals.update(k for k in block if not k.startswith("__"))
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    m.resources[(unquote(rtype), unquote(name))] = dict(body, __file=rel)
        for block in doc.get("data", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    m.data[(unquote(rtype), unquote(name))] = dict(body, __file=rel)
        for block in doc.get("module", []):
            for name, body in block.items():
                m.calls[unquote(name)] = dict(body, __file=rel)
        for block in doc.get("terraform", []):
            m.terraform.append(dict(block, __file=rel))
    return m


# --- provider schema from @cdktf/provider-google's declarations ---------------------------------

INTERFACE = re.compile(r"^export interface (\w+)(?: extends ([\w.]+))? \{\n(.*?)^\}", re.S | re.M)
PROPERTY = re.compile(r"/\*\*((?:(?!\*/).)*?)\*/\s*readonly (\w+)(\?)?: ([^;\n]+)", re.S)
LINK = re.compile(r"/docs/(?:resources|data-sources)/\w+#(\w+) ")
CLASS = re.compile(r"^export declare class (\w+) extends cdktf\.Terraform(?:Resource|DataSource) \{\n(.*?)^\}", re.S | re.M)
GETTER = re.compile(r"^\s+get (\w+)\(\)", re.M)


def snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


class Schema:
    """One resource's arguments: name -> (required, nested Schema or None); and its readable attributes."""

    def __init__(self, props: dict, attrs: set[str]):
        self.props = props
        self.attrs = attrs


def load_schema(lib: Path, kind: str, rtype: str, cache: dict) -> Schema | None:
    key = (kind, rtype)
    if key in cache:
        return cache[key]
    stem = rtype[len("google_") :].replace("_", "-")
    folder = lib / (stem if kind == "resource" else f"data-google-{stem}")
    if not folder.is_dir():
        cache[key] = None
        return None
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.d.ts")))
    interfaces: dict[str, list] = {}
    top = None
    for name, extends, body in INTERFACE.findall(text):
        props = []
        for doc, camel, optional, typ in PROPERTY.findall(body):
            link = LINK.search(doc)
            props.append((link.group(1) if link else snake(camel), not optional, typ.strip()))
        interfaces[name] = props
        if extends == "cdktf.TerraformMetaArguments":
            top = name
    if top is None:
        cache[key] = None
        return None
    built: dict[str, dict] = {}

    def build(iface: str) -> dict:
        if iface in built:
            return built[iface]
        out: dict = {}
        built[iface] = out
        for prop, required, typ in interfaces[iface]:
            first = typ.split("|")[0].strip().removesuffix("[]")
            out[prop] = (required, build(first) if first in interfaces else None)
        return out

    attrs: set[str] = set()
    for _, body in CLASS.findall(text):
        attrs.update(snake(g) for g in GETTER.findall(body))
    props = build(top)
    attrs.update(props)
    cache[key] = Schema(props, attrs)
    return cache[key]


def schema_version(lib: Path) -> str:
    """`hashicorp/google X (@cdktf/provider-google Y)`, read from the package."""
    pkg = lib.parent / "package.json"
    cdktf = re.search(r'"version": "([^"]+)"', pkg.read_text(encoding="utf-8")) if pkg.exists() else None
    sample = next(lib.glob("compute-network/index.d.ts"), None)
    google = re.search(r"hashicorp/google/([0-9.]+)/", sample.read_text(encoding="utf-8")) if sample else None
    return f"hashicorp/google {google.group(1) if google else '?'}, from @cdktf/provider-google {cdktf.group(1) if cdktf else '?'}"


def check_body(where: str, body: dict, schema: dict, top: bool) -> None:
    present = set()
    for key, value in body.items():
        if key.startswith("__") or (top and key in META_RESOURCE):
            continue
        if key == "dynamic":
            for dyn in blocks(value):
                for label, spec in dyn.items():
                    if label.startswith("__"):
                        continue
                    name = unquote(label)
                    present.add(name)
                    entry = schema.get(name)
                    if entry is None:
                        problem(where, f"dynamic block `{name}` is not in the provider schema")
                    elif entry[1] is None:
                        problem(where, f"`{name}` is an argument, not a block")
                    else:
                        for content in blocks(spec.get("content", [])):
                            check_body(f"{where} > {name}", content, entry[1], False)
            continue
        present.add(key)
        entry = schema.get(key)
        if entry is None:
            problem(where, f"`{key}` is not in the provider schema")
            continue
        nested = entry[1]
        if is_block(value):
            if nested is None:
                problem(where, f"`{key}` is an argument (key = value), not a block")
                continue
            for inst in value:
                check_body(f"{where} > {key}", inst, nested, False)
        elif nested is not None and not isinstance(value, str):
            problem(where, f"`{key}` is a block, not an argument")
    for key, (required, _) in schema.items():
        if required and key not in present:
            problem(where, f"required argument `{key}` is missing")


# --- the checks ---------------------------------------------------------------------------------

def check_module(m: Module, modules: dict[Path, Module], root: Path, lib: Path | None, cache: dict) -> None:
    rel = str(m.path.relative_to(root)) or "."
    # terraform block: required_version, pinned providers
    providers: dict[str, dict] = {}
    required_version = False
    for tf in m.terraform:
        required_version |= "required_version" in tf
        for rp in tf.get("required_providers", []):
            for name, spec in rp.items():
                if not name.startswith("__"):
                    providers[name] = spec
    if not m.terraform:
        problem(rel, "no terraform block (required_version, required_providers)")
    if not required_version:
        problem(rel, "terraform.required_version is not set")
    for name, spec in providers.items():
        if not isinstance(spec, dict) or "source" not in spec or "version" not in spec:
            problem(rel, f"required provider `{name}` needs both source and version")
    for kind, table in (("resource", m.resources), ("data", m.data)):
        for rtype, name in table:
            if rtype.split("_")[0] not in providers:
                problem(rel, f"{kind} {rtype}.{name}: provider `{rtype.split('_')[0]}` is not in required_providers")

    # variables and outputs
    for name, v in m.variables.items():
        where = f"{v['__file']}: variable {name}"
        if "type" not in v:
            problem(where, "has no type")
        if not unquote(v.get("description", "")).strip():
            problem(where, "has no description")
        for key in v:
            if not key.startswith("__") and key not in VARIABLE_KEYS:
                problem(where, f"unknown argument `{key}`")
    for name, o in m.outputs.items():
        where = f"{o['__file']}: output {name}"
        if not unquote(o.get("description", "")).strip():
            problem(where, "has no description")
        if "value" not in o:
            problem(where, "has no value")
        for key in o:
            if not key.startswith("__") and key not in OUTPUT_KEYS:
                problem(where, f"unknown argument `{key}`")

    # module calls
    for name, call in m.calls.items():
        where = f"{call['__file']}: module {name}"
        source = unquote(call.get("source", ""))
        if not source.startswith("./") and not source.startswith("../"):
            problem(where, f"source `{source}` is not a local path")
            continue
        target = modules.get((m.path / source).resolve())
        if target is None:
            problem(where, f"source `{source}` is not a module directory here")
            continue
        for arg in call:
            if arg.startswith("__") or arg in META_MODULE:
                continue
            if arg not in target.variables:
                problem(where, f"argument `{arg}` is not a variable of {source}")
        for var, v in target.variables.items():
            if "default" not in v and var not in call:
                problem(where, f"required variable `{var}` of {source} is not passed")

    # references
    for file, doc in m.files.items():
        for expr in expressions(doc):
            for var in re.findall(r"(?<![\w.])var\.([A-Za-z_][\w-]*)", expr):
                if var not in m.variables:
                    problem(file, f"var.{var} is not declared in {rel}")
            for loc in re.findall(r"(?<![\w.])local\.([A-Za-z_][\w-]*)", expr):
                if loc not in m.locals:
                    problem(file, f"local.{loc} is not defined in {rel}")
            for call, out in re.findall(r"(?<![\w.])module\.([\w-]+)(?:\[[^\]]*\])?\.([\w-]+)", expr):
                if call not in m.calls:
                    problem(file, f"module.{call} is not called in {rel}")
                    continue
                target = modules.get((m.path / unquote(m.calls[call].get("source", ""))).resolve())
                if target is not None and out not in target.outputs:
                    problem(file, f"module.{call}.{out}: the module has no output `{out}`")
            for rtype, name, attr in re.findall(
                r"(?<![\w.])(google_[a-z0-9_]+)\.([\w-]+)(?:\[[^\]]*\])?(?:\.([a-z_][a-z0-9_]*))?", expr
            ):
                if (rtype, name) not in m.resources:
                    problem(file, f"{rtype}.{name} is not declared in {rel}")
                elif lib is not None and attr:
                    schema = load_schema(lib, "resource", rtype, cache)
                    if schema is not None and attr not in schema.attrs:
                        problem(file, f"{rtype}.{name}.{attr}: {rtype} has no attribute `{attr}`")
            for rtype, name, attr in re.findall(
                r"(?<![\w.])data\.([a-z0-9_]+)\.([\w-]+)(?:\[[^\]]*\])?(?:\.([a-z_][a-z0-9_]*))?", expr
            ):
                if (rtype, name) not in m.data:
                    problem(file, f"data.{rtype}.{name} is not declared in {rel}")
                elif lib is not None and attr:
                    schema = load_schema(lib, "data", rtype, cache)
                    if schema is not None and attr not in schema.attrs:
                        problem(file, f"data.{rtype}.{name}.{attr}: no attribute `{attr}`")

    # provider schema of every resource and data source
    if lib is not None:
        for kind, table in (("resource", m.resources), ("data", m.data)):
            for (rtype, name), body in table.items():
                if not rtype.startswith("google_"):
                    continue
                schema = load_schema(lib, kind, rtype, cache)
                where = f"{body['__file']}: {'' if kind == 'resource' else 'data.'}{rtype}.{name}"
                if schema is None:
                    problem(where, f"{rtype} is not a {kind} of the provider schema")
                    continue
                check_body(where, body, schema.props, True)


def check_tfvars(path: Path, root_module: Module, root: Path) -> None:
    rel = str(path.relative_to(root))
    try:
        with open(path, encoding="utf-8") as fh:
            doc = hcl2.load(fh)
    except Exception as e:
        problem(rel, f"does not parse: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return
    for key in doc:
        if not key.startswith("__") and key not in root_module.variables:
            problem(rel, f"`{key}` is not a variable of the root module")
    for var, v in root_module.variables.items():
        if "default" not in v and var not in doc:
            problem(rel, f"sets no value for the required variable `{var}`")


def check_skips(root: Path, tf_files: list[Path], skip_ids: list[str]) -> int:
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    section = re.search(r"^(#+) [^\n]*checkov[^\n]*$(.*?)(?=^#{1,2} |\Z)", text, re.S | re.M | re.I)
    explained = section.group(2) if section else ""
    if not section:
        problem("README.md", "has no checkov section")
    ids = list(skip_ids)
    for f in tf_files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            for check, reason in re.findall(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?", line):
                ids.append(check)
                if not (reason or "").strip():
                    problem(f"{f.relative_to(root)}:{n}", f"checkov skip of {check} gives no reason")
    for check in sorted(set(ids)):
        if not re.search(rf"\b{re.escape(check)}\b", explained):
            problem("README.md", f"the checkov section does not explain the skip of {check}")
    return len(set(ids))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default=str(Path(__file__).resolve().parent))
    ap.add_argument("--schema", help="lib folder of @cdktf/provider-google (provider schema check)")
    ap.add_argument("--skip-ids", default="", help="comma-separated checkov checks the check script skips")
    args = ap.parse_args()
    root = Path(args.dir).resolve()
    lib = Path(args.schema).resolve() if args.schema else None
    if lib is not None and not lib.is_dir():
        print(f"check.py: no schema folder {lib}", file=sys.stderr)
        return 2

    tf_files = sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.parts)
    dirs = sorted({p.parent for p in tf_files})
    modules = {d.resolve(): load_module(d, root) for d in dirs}
    cache: dict = {}
    for m in modules.values():
        check_module(m, modules, root, lib, cache)
    root_module = modules.get(root)
    if root_module is None:
        problem(".", "no .tf files in the root module")
    else:
        example = root / "terraform.tfvars.example"
        if example.exists():
            check_tfvars(example, root_module, root)
        else:
            problem(".", "terraform.tfvars.example is missing")
        # every module directory is used
        called = {(root / unquote(c.get("source", ""))).resolve() for c in root_module.calls.values()}
        for d in modules:
            if d != root and d not in called:
                problem(str(d.relative_to(root)), "is a module no one calls")
    skipped = check_skips(root, tf_files, [s for s in args.skip_ids.split(",") if s])

    parsed = sum(len(m.files) for m in modules.values())
    count = lambda attr: sum(len(getattr(m, attr)) for m in modules.values())  # noqa: E731
    types = {t for m in modules.values() for t, _ in m.resources}
    print(
        f"terraform: {parsed}/{len(tf_files)} files parsed, {len(modules)} modules "
        f"({count('calls')} module calls), {count('resources')} resources of {len(types)} types, "
        f"{count('data')} data sources, {count('variables')} variables, {count('outputs')} outputs, "
        f"{skipped} checkov skips explained"
    )
    if lib is not None:
        checked = sum(1 for v in cache.values() if v is not None)
        print(f"terraform: provider schema ({schema_version(lib)}) checked for {checked} resource and data source types")
    sys.stdout.flush()
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    if problems:
        print(f"terraform: {len(problems)} problems", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
