"""docs/scenarios.md, rendered from the scenario schema (bench/scenario.py) so that it cannot drift from it.

    python -m bench.scenario_docs > docs/scenarios.md

One table per section of a scenario file (field, type, unit, default, description), found by walking the
pydantic models from :class:`bench.scenario.Scenario` down; a unit comes from its field's name suffix
(``_ps``, ``_db_per_km``, …, STYLE.md "Units in names").
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bench.scenario import FAULT_ARGUMENTS, FAULT_EFFECTS, METRIC_MEANINGS, Scenario, nested_model, parse_scenario

REGENERATE = "python -m bench.scenario_docs > docs/scenarios.md"

# field-name suffix → unit, the most specific first
UNITS: tuple[tuple[str, str], ...] = (
    ("pairs_per_s_per_mw", "pairs/(s·mW)"), ("ps_per_km_k", "ps/(km·K)"), ("ps_per_nm2_km", "ps/(nm²·km)"),
    ("ps_per_nm_km", "ps/(nm·km)"), ("ps_per_nm", "ps/nm"), ("db_per_km", "dB/km"), ("rad_per_sqrt_s", "rad/√s"),
    ("fm_per_sqrt_s", "1/√s"), ("per_kelvin_rad", "rad/K"), ("rad_per_kelvin", "rad/K"), ("rad_per_v", "rad/V"),
    ("per_day", "1/day"), ("ghz", "GHz"), ("hz", "Hz"), ("ps", "ps"), ("ns", "ns"), ("s", "s"), ("mw", "mW"),
    ("db", "dB"), ("nm", "nm"), ("km", "km"), ("rad", "rad"), ("c", "°C"), ("k", "K"), ("v", "V"), ("ua", "µA"),
    ("ppt", "1e-12"), ("bins", "bins"), ("bits", "bits"), ("sigmas", "σ"),
)
BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}  # attributes of pydantic's constraint metadata
SCALARS = {float: "number", int: "integer", bool: "boolean", str: "string"}

HEADER = f"""\
# Scenario files

<!-- Generated from bench/scenario.py by `{REGENERATE}`; do not edit by hand. -->

A scenario is one YAML file: the emulated link and its devices, the environment, a fault timeline, the
stack's settings, how long to run and at which fidelity, and the acceptance criteria of the run. The same
file runs emulated in accelerated virtual time or, with `--hardware bench.yaml`, on real instruments.

```sh
qkd-bench validate scenarios/smoke-50km-1h.yaml   # schema check only; exit code 2 and the errors if it fails
qkd-bench run scenarios/smoke-50km-1h.yaml --out runs/smoke [--seed N] [--fidelity F] [--until SECONDS]
```

- Only `name`, `seed`, `duration_s` and the **required** fields of `link` must be given; every other field
  has the default below (the calibration of the first Nice-like link, with its source).
- Units are in the field names (`_s`, `_ps`, `_db`, `_mw`, `_hz`, `_rad`, `_c`, `_km`, `_nm`, `_v`, …);
  fractions are fractions, not %. A "—" default means "not set".
- Unknown fields are refused, so a typo never silently means a default. Every error names the file, the
  line and the field, e.g. `bad.yaml:27: link.alice.fibre.lenght: unknown field (allowed: length_km, …)`.
- Faults come from two lists, merged into one timeline: `faults`, at explicit times, and
  `stochastic_faults`, a Poisson process per entry (mean time between faults `mtbf_s`) drawn from the
  entry's own `seed` over [0, `duration_s`): the same seed gives the same timeline whatever the run's seed.
  Each fault takes the arguments its kind needs, and only those (fault kinds, below).
- `acceptance` bounds metrics of the run's `report.json` (metrics, below): the run exits 0 when every
  bound holds, 1 naming each one that fails. `reference` quotes published figures for the report.
"""

EXAMPLE = """\
name: example-50km-1h
seed: 7
duration_s: 3600
link:
  source: {brightness_pairs_per_s_per_mw: 2.0e7}
  pump: {power_mw: 19.2}
  alice:
    fibre: {length_km: 0.1, device_loss_db: 12.0, compensation_ps_per_nm: -880.0}
    channels: {z: 1, x_plus: 2, x_minus: 3}
  bob:
    fibre: {length_km: 50.0, device_loss_db: 2.553}
    channels: {z: 5, x_plus: 6, x_minus: 7}
  environment: {diurnal_amplitude_c: 1.5}
stack:
  distillation: {fraction: 0.05}   # sampled distillation: 5 % of the key blocks for real
faults:
  - {at_s: 600, kind: fibre_cut, node: bob, duration_s: 30}
  - {at_s: 1800, kind: phase_jump, node: alice, delta_rad: 1.2}
stochastic_faults:
  - {kind: clock_unlock, node: bob, duration_s: 10, max_duration_s: 60, mtbf_s: 1200, seed: 1}
acceptance:
  qber_z_mean: {min: 0.03, max: 0.06}
  availability: {min: 0.9}
reference:
  qber_z_mean: {value: 0.0424, tolerance: 0.1, source: 'seed 000: "QBERz 4.24 %"'}
"""


def unit(name: str) -> str:
    """The unit a field's name ends with, or "" (dimensionless, a count, or stated in the description)."""
    return next((u for suffix, u in UNITS if name == suffix or name.endswith(f"_{suffix}")), "")


def type_text(field: FieldInfo) -> str:
    """What a field holds, with its range, e.g. ``number > 0, ≤ 1`` or ``list of sections``."""
    annotation = field.annotation
    if nested_model(annotation) is not None:
        return {tuple: "list of sections", dict: "metric → section"}.get(get_origin(annotation), "section")
    kinds = [a for a in (get_args(annotation) if get_origin(annotation) is not Literal else ()) or (annotation,)
             if a is not type(None)]
    literal = [v for k in kinds if get_origin(k) is Literal for v in get_args(k)]
    text = " or ".join(f"`{v}`" for v in literal) if literal else " or ".join(SCALARS[k] for k in kinds)
    limits = [f"{symbol} {getattr(m, name):g}" for m in field.metadata for name, symbol in BOUNDS.items()
              if getattr(m, name, None) is not None]
    limits += [f"of length ≥ {m.min_length}" for m in field.metadata if getattr(m, "min_length", None)]
    return text + (" " + ", ".join(limits) if limits else "")


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value: Any = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see its table"
    return "—" if value is None else f"`{json.dumps(value, ensure_ascii=False)}`"


def table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> str:
    lines = [head, tuple("---" for _ in head), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in lines)


def sections(model: type[BaseModel] = Scenario, path: str = "") -> dict[type[BaseModel], list[str]]:
    """Every model of the schema, in the order a file reads, with the paths where it appears."""
    found: dict[type[BaseModel], list[str]] = {model: [path]}
    for name, field in model.model_fields.items():
        if (inner := nested_model(field.annotation)) is not None:
            suffix = {tuple: "[*]", dict: ".<metric>"}.get(get_origin(field.annotation), "")
            for sub, paths in sections(inner, f"{path}.{name}{suffix}".lstrip(".")).items():
                found.setdefault(sub, []).extend(paths)
    return found


def doc_of(model: type[BaseModel]) -> str:
    """The model's own docstring (not an inherited one), in Markdown."""
    return (model.__dict__.get("__doc__") or "").replace("``", "`").strip()


def description(field: FieldInfo) -> str:
    """The field's description, or for a section without one, its model's docstring."""
    model = nested_model(field.annotation)
    return field.description or (doc_of(model).splitlines()[0] if model is not None and doc_of(model) else "")


def section_text(model: type[BaseModel], paths: list[str]) -> str:
    title = ", ".join(f"`{p}`" for p in paths) if paths != [""] else "Top level"
    rows = [(f"`{name}`", type_text(field), unit(name), default_text(field), description(field))
            for name, field in model.model_fields.items()]
    return f"## {title}\n\n{doc_of(model)}\n\n" + table(rows, ("field", "type", "unit", "default", "description"))


def render() -> str:
    """The whole of docs/scenarios.md."""
    parse_scenario(EXAMPLE, "the example of bench/scenario_docs.py")  # the example must validate
    parts = [HEADER.strip(), f"## Example\n\n```yaml\n{EXAMPLE}```"]
    parts += [section_text(model, paths) for model, paths in sections().items()]
    parts.append("## Fault kinds\n\nThe `kind` of an entry of `faults` or `stochastic_faults`, the arguments it "
                 "takes (all of them, no others) and what it does.\n\n"
                 + table([(f"`{k}`", ", ".join(f"`{a}`" for a in args), FAULT_EFFECTS[k])
                          for k, args in FAULT_ARGUMENTS.items()], ("kind", "arguments", "effect")))
    parts.append("## Metrics\n\nWhat `acceptance` and `reference` may name: metrics of `report.json`.\n\n"
                 + table([(f"`{m}`", meaning) for m, meaning in METRIC_MEANINGS.items()], ("metric", "meaning")))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
