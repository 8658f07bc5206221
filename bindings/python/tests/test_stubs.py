"""The type stubs (relcount.pyi) describe the module as built: every public name of
the module is in the stubs and every name in the stubs is in the module, and so for
the Engine class's methods, with the same parameter names."""

import ast
import inspect
import pathlib

import relcount

STUBS = ast.parse((pathlib.Path(__file__).resolve().parents[1] / "relcount.pyi").read_text())
TYPING_ONLY = {"Value", "Profile", "PropSpec", "TopItem", "PropCounter", "Counter", "Valued",
               "Row", "Page", "Subscription"}


def stub_names():
    names = set()
    for node in STUBS.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets)
    return names


def test_module_and_stubs_name_the_same_things():
    public = {n for n in dir(relcount) if not n.startswith("_")} | {"__version__"}
    public.discard("relcount")  # the extension module itself, re-exported by maturin's __init__
    assert stub_names() - TYPING_ONLY == public


def test_engine_methods_and_parameters_match():
    engine_stub = next(n for n in STUBS.body if isinstance(n, ast.ClassDef) and n.name == "Engine")
    stubbed = {}
    for f in engine_stub.body:
        if isinstance(f, ast.FunctionDef):
            a = f.args
            params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg != "self"]
            stubbed[f.name] = params
    methods = {n for n in dir(relcount.Engine) if not n.startswith("_")} | {"__init__"}
    assert set(stubbed) == methods
    for name, params in stubbed.items():
        if name in ("profile_count", "relation_count"):
            continue  # properties
        target = relcount.Engine if name != "__init__" else relcount.Engine
        sig = inspect.signature(getattr(target, name) if name != "__init__" else relcount.Engine)
        assert [p for p in sig.parameters if p != "self"] == params, name
