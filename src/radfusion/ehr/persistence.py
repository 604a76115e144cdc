"""Saving and loading EHR models without pickle, against an exact list of types.

A skops file describes every object it holds by module, class and loader. Loading one runs no
code unless a type is trusted, and a trusted *function* is called by the estimator that holds
it: a ``FunctionTransformer`` around ``numpy.take`` or a test helper that runs a script is
code execution. So radfusion trusts by exact name only the types its own pipelines are made
of (:data:`ALLOWED_TYPES`, read off the ``elasticnet`` and ``hgb`` pipelines), and no loader
that rebuilds a function or a method. Every object in the file is checked before skops is
asked to build any of them; the first one outside the list is refused, by name.

``save_model`` applies the same check to what it has just written, so a model radfusion writes
is one it can read back, and no callable is ever persisted.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

from sklearn.pipeline import Pipeline

from radfusion.errors import RadfusionError
from radfusion.io import atomic_path, regular_file

__all__ = ["ALLOWED_LOADERS", "ALLOWED_TYPES", "file_types", "load_model", "save_model"]

_BUILTINS = ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType")
_NUMPY = ("ndarray", "dtype", "float64", "float32", "int64", "int32", "uint8", "uint32")
#: Every ``module.class`` our EHR pipelines are made of (elasticnet and hgb, either
#: class_weight); a new estimator in :data:`radfusion.ehr.model.EHR_MODELS` adds its own.
ALLOWED_TYPES = frozenset(
    [f"builtins.{name}" for name in _BUILTINS]
    + [f"numpy.{name}" for name in (*_NUMPY, "uint64", "bool", "bool_")]
    + [
        "numpy.random._generator.Generator",
        "sklearn.pipeline.Pipeline",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.impute._base.MissingIndicator",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._label.LabelEncoder",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.Interval",
    ]
)
#: skops' node kinds that rebuild data or an object of an allowed class; never a function
#: (``FunctionNode``), a method, an operator or an object rebuilt by ``__reduce__``.
ALLOWED_LOADERS = frozenset(
    [
        "DictNode",
        "ListNode",
        "TupleNode",
        "JsonNode",
        "TypeNode",
        "DTypeNode",
        "NdArrayNode",
        "ObjectNode",
        "RandomGeneratorNode",
        "LossNode",
    ]
)
_SCHEMA_LIMIT = 256 * 2**20


def _nodes(node) -> Iterator[tuple[str, str]]:
    """(``module.class``, loader) of every object described in a skops schema."""
    if isinstance(node, dict):
        if "__class__" in node or "__loader__" in node:
            name = f"{node.get('__module__', '?')}.{node.get('__class__', '?')}"
            yield name, str(node.get("__loader__", "?"))
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def file_types(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Every (``module.class``, loader) a skops file describes, without building any object."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("schema.json")
            if info.file_size > _SCHEMA_LIMIT:
                raise RadfusionError(f"{path}: the model's schema is too large to be ours")
            schema = json.loads(archive.read(info))
    except RadfusionError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
        raise RadfusionError(
            f"{path}: not a readable skops model file ({type(exc).__name__}); "
            "train it again with radfusion train-ehr"
        ) from None
    return sorted(set(_nodes(schema)))


def _refused(path: Path) -> str | None:
    for name, loader in file_types(path):
        if loader not in ALLOWED_LOADERS:
            return f"{name} (rebuilt by {loader})"
        if name not in ALLOWED_TYPES:
            return name
    return None


def save_model(model: Pipeline, path: str | os.PathLike) -> None:
    """Write ``model`` as a skops file, atomically; refuse (writing nothing) a model that
    holds a type :func:`load_model` would refuse, a function above all."""
    import skops.io as sio

    with atomic_path(path) as tmp:
        sio.dump(model, tmp)
        refused = _refused(tmp)
        if refused:
            raise RadfusionError(
                f"{path}: the model holds {refused}, which radfusion does not persist"
            )


def load_model(path: str | os.PathLike) -> Pipeline:
    """Load a model saved by :func:`save_model`. A file holding any type outside
    :data:`ALLOWED_TYPES`, or any function, is refused before a single object is built."""
    import skops.io as sio

    path = regular_file(path, "EHR model", "model")
    refused = _refused(path)
    if refused:
        raise RadfusionError(
            f"{path}: refusing to load {refused}: not a type radfusion's EHR models use "
            "(a model file from elsewhere can run code); train the model again with "
            "radfusion train-ehr"
        )
    try:
        trusted = sio.get_untrusted_types(file=path)
        model = sio.load(path, trusted=trusted)
    except Exception as exc:  # a schema that passed the list but does not build
        raise RadfusionError(
            f"{path}: not a readable skops model file ({type(exc).__name__}); "
            "train it again with radfusion train-ehr"
        ) from None
    if not isinstance(model, Pipeline):
        raise RadfusionError(f"{path}: holds a {type(model).__name__}, not an EHR pipeline")
    return model
