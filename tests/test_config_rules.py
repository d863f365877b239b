"""The config package: the rule engine on hand-made values, every bad value the issues name (24, 29)
rejected at compose naming its key, every preset and group option valid, YAML and schema unable to drift,
the ``_target_`` allow-list."""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import math
import re
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repshare.config import CONF_DIR, ConfigError, RepshareConfig, allowed_target, compose, compose_raw, validate_config
from repshare.config import data as data_group
from repshare.config.rules import (Builds, Check, Each, Fraction, Identifier, Interval, IntRange, Keys, Length,
                                   NonEmpty, OneOf, OrNull, Positive, Tree, Unique, Values, When, check_table, expand,
                                   sibling)
from repshare.config.schema import GROUP_MODULES, RULES, TARGETS

ROOT = Path(__file__).resolve().parents[1]


def rejects(rule, value, root=None) -> str | None:
    """The message a rule gives ``value`` at key ``k``, or None when it accepts it."""
    try:
        rule.check("k", value, Tree(root or {}))
    except ConfigError as err:
        return str(err)
    return None


# --------------------------------------------------------------------------- the engine on hand-made values
@pytest.mark.parametrize("rule, good, bad", [
    (Interval(0, 1), [0, 0.5, 1, 1.0], [-1e-9, 1.000001, math.nan, math.inf, True, "0.5", None]),
    (Interval(0, 1, open_low=True), [1e-12, 1], [0, 0.0, -1]),
    (Interval(0, 1, open_high=True), [0, 0.999], [1, 1.0]),
    (Interval(0), [0, 1e300], [-1, -math.inf, math.inf]),
    (Positive(), [1e-300, 3], [0, -2]),
    (Fraction(), [0, 1], [1.5, -0.1]),
    (IntRange(1, 3), [1, 2, 3], [0, 4, 2.0, True, "2"]),
    (IntRange(0), [0, 10**12], [-1]),
    (OneOf("a", 1), ["a", 1], ["b", 1.0, True, None]),
    (NonEmpty(), ["x", [0], {"a": 1}], ["", "   ", [], {}, None]),
    (Unique(), [[], [1, 2], [[1], [2]]], [[1, 1], [[16], [16]], ["er", "ba", "er"]]),
    (Identifier(), ["a", "classifier_color", "x-1", "_h", "A" * 64],
     ["", "../x", "a/b", "..", "-x", "a b", "javascript:alert(1)//", "a.b", "A" * 65, 3, None]),
    (Length(3), [[1, 2, 3]], [[], [1, 2], [1, 2, 3, 4]]),
    (Length(2, None), [[1, 2], list(range(9))], [[1]]),
    (Each(IntRange(0)), [[], [0, 5]], [[1, -1], 3]),
    (Keys(Identifier()), [{}, {"a": "../x"}], [{"../x": "a"}]),
    (Values(Identifier()), [{"../x": "a"}], [{"a": "../x"}]),
    (OrNull(IntRange(1)), [None, 1], [0, "x"]),
])
def test_rules_accept_and_reject_hand_picked_values(rule, good, bad):
    for v in good:
        assert rejects(rule, v) is None, v
    for v in bad:
        assert rejects(rule, v) is not None, v


def test_the_message_names_the_key_and_value_in_one_line():
    assert rejects(Interval(0, 1, open_low=True), 1.5) == "config value k=1.5 is invalid: must be in (0, 1]"
    assert rejects(IntRange(0, 9), -1) == "config value k=-1 is invalid: must be an integer in [0, 9]"
    assert rejects(OrNull(IntRange(1)), 0) == "config value k=0 is invalid: must be an integer >= 1 or null"
    assert rejects(Each(OneOf("a", "b")), ["a", "c"]) == "config value k='c' is invalid: must be one of a, b"
    assert rejects(Values(Positive()), {"m": -1.0}) == "config value k.m=-1.0 is invalid: must be > 0"
    assert rejects(Unique(), ["er", "er"]) == "config value k=['er', 'er'] is invalid: lists 'er' twice"


def test_cross_field_checks_see_the_whole_config_and_their_key():
    root = {"a": {"lo": 3, "hi": 2}, "on": False}
    above_lo = Check(lambda v, r, key: None if v >= sibling(r, key, "lo") else f"must be >= lo={sibling(r, key, 'lo')}")
    with pytest.raises(ConfigError, match=r"^config value a\.hi=2 is invalid: must be >= lo=3$"):
        check_table(root, [("a.hi", above_lo)])
    check_table(root, [("a.hi", When(lambda r: r.on, IntRange(5)))])  # the condition is false: not checked
    with pytest.raises(ConfigError, match=r"a\.hi=2"):
        check_table({**root, "on": True}, [("a.hi", When(lambda r: r.on, IntRange(5)))])


def test_builds_reports_what_the_science_class_refuses():
    def build(v):
        raise ValueError(f"g.p={v['p']!r} must be in [0, 1]")

    with pytest.raises(ConfigError, match=r"^config value g is invalid: g\.p=2 must be in \[0, 1\]$"):
        check_table({"g": {"p": 2}}, [("g", Builds(build))])


def test_key_patterns_expand_to_concrete_keys_and_skip_absent_parents():
    tree = {"train": {"a": {"lr": 1}, "b": {"lr": 2}}, "w": {"models": [{"n": "x"}, {"n": "y"}]},
            "adapter": {"lstsq": None, "moments": {"eps": 0.1}}}
    assert list(expand(tree, "train.*.lr")) == [("train.a.lr", 1), ("train.b.lr", 2)]
    assert list(expand(tree, "w.models[*].n")) == [("w.models[0].n", "x"), ("w.models[1].n", "y")]
    assert list(expand(tree, "w.models[1]")) == [("w.models[1]", {"n": "y"})]
    assert list(expand(tree, "adapter.lstsq.ridge")) == []  # an adapter not chosen
    assert list(expand(tree, "nothing.here")) == []
    assert Tree(tree).select("w.models[1].n") == "y" and Tree(tree).select("w.models[5].n") is None


# --------------------------------------------------------------------------- every issue case at compose
@pytest.fixture(scope="module")
def smoke_raw():
    return compose_raw(["experiment=smoke"])


def with_value(raw, key: str, value):
    cfg = OmegaConf.create(copy.deepcopy(OmegaConf.to_container(raw)))
    OmegaConf.update(cfg, key, value, merge=False)
    return cfg


CLASSIFIER = {"name": "classifier", "task": "classification", "metric": "top1"}
# (key to set, value, key the one-line error must name). Issue 24 sections 3 and 4, issue 29, and bounds.
ISSUE_CASES = [
    ("multiexit.latency.warmup", -1, "multiexit.latency.warmup"),
    ("multiexit.kd.curve_fractions", [], "multiexit.kd.curve_fractions"),
    ("concurrency.grouping_units", [], "concurrency.grouping_units"),
    ("concurrency.grouping_units", [100], "concurrency.grouping_units"),  # the smoke graphs have 12 vertices
    ("concurrency.generators", ["er", "er"], "concurrency.generators"),
    ("concurrency.network.image_size", 1, "concurrency.network.image_size"),
    ("concurrency.dp_sweep.betas", [], "concurrency.dp_sweep.betas"),
    ("concurrency.seed", -1, "concurrency.seed"),
    ("concurrency.n_vertices", [100000], "concurrency.n_vertices"),
    ("placement.horizon_factors", [], "placement.horizon_factors"),
    ("placement.variants", [], "placement.variants"),
    ("compare.methods", {}, "compare.methods"),
    ("compare.methods", {"javascript:alert(document.cookie)//": "gemel"}, "compare.methods"),
    ("compare.methods", {"gemel": "../../gemel"}, "compare.methods.gemel"),
    ("compare.sections_only", {"../../../../../x": "concurrency"}, "compare.sections_only"),
    ("paths.results_dir", "", "paths.results_dir"),
    ("paths.data_dir", "", "paths.data_dir"),
    ("analysis.budget_fracs", [], "analysis.budget_fracs"),
    ("seed", -1, "seed"),
    ("data.n_val", -3, "data.n_val"),
    ("data._target_", "repshare.utils.io.clean_stale_temps", "data._target_"),
    ("trainer._target_", "os.system", "trainer._target_"),
    ("workload.models", [], "workload.models"),
    ("workload.models", [CLASSIFIER, CLASSIFIER], "workload.models[0].name"),
    ("workload.models", [{**CLASSIFIER, "name": "foo"}], "workload.models[0].name"),
    ("workload.models", [{**CLASSIFIER, "name": "../../../x"}], "workload.models[0].name"),
    ("workload.models", [{**CLASSIFIER, "metric": "foo"}], "workload.models[0].metric"),
    ("workload.models", [{**CLASSIFIER, "task": "segmentation"}], "workload.models[0].task"),
    ("workload.models", [{**CLASSIFIER, "metric": "mAP"}], "workload.models[0].metric"),
    ("data.image_size", 100000, "data.image_size"),
    ("model.detector.image_size", 4096, "model.detector.image_size"),
    ("capture.n_samples", 49, "capture.n_samples"),  # the smoke val split has 48 images
    ("multiexit.features.n_train", 97, "multiexit.features.n_train"),  # 96 train images
    ("gemel.n_holdout", 96, "gemel.n_holdout"),
    ("placement.model_name", "detector", "placement.model_name"),
    ("gemel.sim.timing", "wallclock", "gemel.sim.timing"),
    ("concurrency.degree_matched", ["er", "er"], "concurrency.degree_matched"),
    ("experiment_name", "../x", "experiment_name"),
]


@pytest.mark.parametrize("key, value, named", ISSUE_CASES)
def test_every_issue_case_is_one_line_naming_its_key(smoke_raw, key, value, named):
    with pytest.raises(ConfigError) as err:
        validate_config(with_value(smoke_raw, key, value))
    line = str(err.value)
    assert line.startswith(f"config value {named}=") and "is invalid: " in line and "\n" not in line


@pytest.mark.parametrize("override, named", [
    ("seed=-1", "seed"),
    ("concurrency.generators=[er,er]", "concurrency.generators"),
    ("workload.models.0.name=../../x", "workload.models[0].name"),
    ("data._target_=repshare.utils.io.clean_stale_temps", "data._target_"),
])
def test_cli_overrides_are_rejected_at_compose(override, named):
    with pytest.raises(ConfigError, match="^" + re.escape(f"config value {named}=")):
        compose(["experiment=smoke", override])


# --------------------------------------------------------------------------- presets and group options
def _group_options() -> list[tuple[str, Path]]:
    out = []
    for f in sorted(CONF_DIR.rglob("*.yaml")):
        group = f.parent.relative_to(CONF_DIR).as_posix()
        if group not in (".", "experiment") and not group.startswith("hydra"):
            out.append((group, f))
    return out


@pytest.fixture(scope="module")
def embedded_raw():
    return compose_raw([])


@pytest.mark.parametrize("group, path", _group_options(), ids=lambda x: x.name if isinstance(x, Path) else x)
def test_every_group_option_file_validates(group, path, embedded_raw):
    """Each conf/<group>/<option>.yaml in place of the default's choice (as Hydra composes a group file)."""
    text = OmegaConf.to_container(OmegaConf.load(path))
    if "defaults" in text:  # composes other files itself: let Hydra do it
        validate_config(compose_raw([f"{group}={path.stem}"]))
        return
    cfg = OmegaConf.create(copy.deepcopy(OmegaConf.to_container(embedded_raw)))
    if group == "adapter":  # one adapter alone
        cfg.adapter = {**{k: None for k in cfg.adapter}, **text}
    elif group == "data":
        for key in ("root", "images_dir", "annotations"):  # required paths, given on the command line
            if key in text:
                text[key] = "/data/x"
        cfg.data = text
        if text.get("name") != "shapes":  # the adapters' fitting split must be one this source has (shapes: select)
            cfg.sharing.calibration_split = "calib" if text.get("name") == "imagenet" else "train"
    else:
        OmegaConf.update(cfg, group.replace("/", "."), text, merge=False)
    validate_config(cfg)


def test_committed_params_yaml_still_validates():
    validate_config(OmegaConf.load(ROOT / "params.yaml"))


# --------------------------------------------------------------------------- YAML and schema cannot drift
def _schema_nodes(tp, path: str = ""):
    """(key pattern, dataclass) of every dataclass in the schema tree under ``tp``."""
    hints = typing.get_type_hints(tp)
    yield path, tp
    for f in dataclasses.fields(tp):
        sub = hints[f.name]
        key = f"{path}.{f.name}" if path else f.name
        args = typing.get_args(sub)
        if typing.get_origin(sub) is typing.Union:  # Optional[X]
            sub = next(a for a in args if a is not type(None))
        item = typing.get_args(sub)[0] if typing.get_origin(sub) is list and typing.get_args(sub) else None
        if item is not None and dataclasses.is_dataclass(item):
            yield from _schema_nodes(item, f"{key}[*]")
        elif dataclasses.is_dataclass(sub):
            yield from _schema_nodes(sub, key)


def _schema_defaults():
    """(dataclass, field, every key pattern where that dataclass sits) of each field with a default."""
    places: dict[type, list[str]] = {}
    for path, tp in list(_schema_nodes(RepshareConfig)) + [("data", s) for s in data_group.SCHEMAS.values()]:
        places.setdefault(tp, []).append(path)
    for tp, paths in places.items():
        for f in dataclasses.fields(tp):
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                yield tp, f, paths


@pytest.fixture(scope="module")
def compositions():
    """Raw compositions that between them use every group option."""
    overrides = [[], ["experiment=smoke"], ["experiment=gpu", "adapter=[moments]"], ["experiment=real", "data.root=/x"],
                 ["data=coco", "data.images_dir=/a", "data.annotations=/b", "adapter=[resample]"]]
    return [OmegaConf.to_container(compose_raw(o), resolve=True) for o in overrides]


@pytest.fixture(scope="module")
def validated(compositions):
    """The same, merged into the schema (optional keys filled in)."""
    return [OmegaConf.to_container(validate_config(c), resolve=True) for c in compositions]


def test_the_schema_holds_no_value_the_yaml_always_sets(compositions):
    """A schema default must be an optional key some composition leaves out; otherwise the value lives in
    conf/ and the default would be a second, drifting copy (as gemel.steps was: 15 in the schema, 40 in YAML)."""
    dead = []
    for tp, f, paths in _schema_defaults():
        omitted = any(isinstance(node, dict) and f.name not in node
                      for c in compositions for p in paths for _, node in expand(c, p))
        if not omitted:
            dead.append(f"{tp.__name__}.{f.name} = {f.default!r}")
    assert not dead, "schema defaults every composition overrides (keep the value in conf/ only): " + ", ".join(dead)


def test_derived_schemas_are_the_science_dataclasses_without_their_values():
    from repshare.config.concurrency import ConcurrencyConfig
    from repshare.config.placement import PlacementConfig

    derived = [t for _, t in list(_schema_nodes(PlacementConfig)) + list(_schema_nodes(ConcurrencyConfig))
               if hasattr(t, "science")]
    assert len(derived) == 8  # placement, simulation, baselines; generator, network, latency, proxy, dp_sweep
    for schema in derived:
        science = {f.name for f in dataclasses.fields(schema.science)}
        assert {f.name for f in dataclasses.fields(schema)} <= science
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(schema)), schema.__name__


def test_derived_groups_hold_exactly_the_science_fields_the_yaml_sets(compositions):
    from repshare.concurrency.settings import NetSpec, ProxyTraining
    from repshare.multiexit.placement_settings import PlacementSettings

    embedded = compositions[0]
    assert set(embedded["placement"]) == {f.name for f in dataclasses.fields(PlacementSettings)}
    assert set(embedded["concurrency"]["network"]) | {"staging", "num_classes", "in_channels"} == \
        {f.name for f in dataclasses.fields(NetSpec)}
    proxy_fields = {f.name for f in dataclasses.fields(ProxyTraining)}
    assert set(embedded["concurrency"]["proxy"]) | {"weight_decay"} == proxy_fields


def test_every_rule_key_exists_in_some_composition(validated):
    """A misspelt key in a table would silently never be checked."""
    unused = [row[0] for row in RULES if not any(list(expand(c, row[0])) for c in validated)]
    assert not unused, unused


def test_every_group_module_has_a_rule_for_every_leaf(validated):
    """No key goes unchecked: every leaf of the composed config is covered by some row (bools excepted:
    the type merge checks them)."""
    patterns = [row[0] for row in RULES]
    covered: set[str] = set()
    for c in validated:
        for p in patterns:
            covered |= {k for k, _ in expand(c, p)}

    def leaves(node, path=""):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                yield from leaves(v, f"{path}.{k}" if path else k)
        elif isinstance(node, list) and node and isinstance(node[0], dict):
            for i, v in enumerate(node):
                yield from leaves(v, f"{path}[{i}]")
        else:
            yield path, node

    def is_covered(key):
        parts = key.replace("[", ".[").split(".")
        return any(".".join(parts[:i]).replace(".[", "[") in covered for i in range(1, len(parts) + 1))

    missing = sorted({k for c in validated for k, v in leaves(c) if not isinstance(v, bool) and not is_covered(k)
                      and not k.endswith("._target_")})
    assert not missing, missing
    assert len(GROUP_MODULES) == 10


# --------------------------------------------------------------------------- the _target_ allow-list
def _defined(target: str) -> bool:
    """Whether ``module.Name`` is defined at the top level of its module's source (without importing it:
    Lightning and effdet take tens of seconds to import on the 2-core box)."""
    module, name = target.rsplit(".", 1)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return False
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    return any(getattr(n, "name", None) == name or name in {a.asname or a.name for a in getattr(n, "names", [])}
               for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.ImportFrom)))


def test_the_allow_list_names_real_classes_per_key():
    assert set(TARGETS) == {"data._target_", "model.classifier._target_", "model.classifier_color._target_",
                            "model.detector._target_", "trainer._target_"}
    for key, allowed in TARGETS.items():
        for target in allowed:
            assert allowed_target(target, key) and allowed_target(target)
            if not target.startswith("lightning.pytorch"):  # the newer package name of the Trainer; not installed
                assert _defined(target), target
    assert not allowed_target("repshare.utils.io.clean_stale_temps")
    assert not allowed_target("repshare.models.classifier.build_classifier", "data._target_")


def test_a_target_anywhere_else_is_refused(smoke_raw):
    cfg = with_value(smoke_raw, "compare.methods", {"x": "y"})
    with pytest.raises(ConfigError, match=r"^config value data\._target_="):
        validate_config(with_value(cfg, "data._target_", "repshare.data.coco.CocoSource"))  # not shapes' source


# --------------------------------------------------------------------------- copies of science constants
def test_constants_the_schema_keeps_equal_the_science_ones():
    """Constants kept here so the schema does not import torch; they must match the modules they mirror."""
    from repshare.config import model, multiexit, sharing
    from repshare.features.capture import PROTOCOLS
    from repshare.models.preprocess import INTERPOLATIONS
    from repshare.multiexit.zoo import CONV_TYPES, KERNELS

    assert model.INTERPOLATIONS == INTERPOLATIONS and sharing.PROTOCOLS == PROTOCOLS
    assert multiexit.CONV_TYPES == CONV_TYPES and multiexit.KERNELS == KERNELS


def test_importing_the_config_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, repshare.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
