"""Every dotted key the schema declares, and which kind of dataset owns a ``data.*`` key: what "did you mean" and
``resume=``'s replay rule compare a typed key with. Import-light, as the schema."""

from __future__ import annotations

from narm_lightning.config.data_schema import AtomicDataConfig, ClicksDataConfig, SessionDataConfig
from narm_lightning.config.rules import keys_of, nested_schemas
from narm_lightning.config.schema import LOGGERS, TrainConfig
from narm_lightning.config.serving import ExportConfig, RecommendConfig

DATA_KINDS = {"RecBole atomic datasets (data=ml-100k, or data.format=atomic)": AtomicDataConfig,
              "session datasets (data=diginetica, yoochoose1_64, yoochoose1_4)": SessionDataConfig,
              "your own click log (data=clicks)": ClicksDataConfig}


def dotted_keys(schema: type, prefix: str = "") -> list[str]:
    """The shown (not hidden) keys of a schema and of the schemas nested in it (``model.*``, ``trainer.*``)."""
    out = [prefix + k.name for k in keys_of(schema) if not k.hidden]
    for name, nested in nested_schemas(schema):
        out += dotted_keys(nested, f"{prefix}{name}.")
    return out


def known_keys() -> list[str]:
    """Every dotted key the schema declares (for "did you mean")."""
    names = dotted_keys(TrainConfig)
    names += [f"data.{key}" for schema in DATA_KINDS.values() for key in dotted_keys(schema)]
    names += [f"logger.{name}.{key}" for name, schema in LOGGERS.items() for key in dotted_keys(schema)]
    return names + [key for schema in (RecommendConfig, ExportConfig) for key in dotted_keys(schema)]


def data_key_owner(key: str) -> str | None:
    """For a ``data.*`` key that only some kinds of dataset have: which (for a key given to another)."""
    owners = [kind for kind, schema in DATA_KINDS.items() if key in {f"data.{k}" for k in dotted_keys(schema)}]
    return " and ".join(owners) if 0 < len(owners) < len(DATA_KINDS) else None
