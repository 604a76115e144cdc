"""A run folder may come from a stranger: nothing in it may run code.

The crafted EHR model below is the one a review reproduced: a pipeline of
``FunctionTransformer``s around NumPy functions and a scikit-learn test helper that runs a
Python script. Every type in it is under ``sklearn.`` or ``numpy.``, so a prefix allow-list
let it through, and its script ran inside ``radfusion predict``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils import _testing
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.data import Cohort
from radfusion.ehr.model import EHR_MODELS, create_ehr_model
from radfusion.ehr.persistence import ALLOWED_TYPES, load_model, save_model
from radfusion.errors import RadfusionError

runner = CliRunner()


def _hostile_pipeline(witness) -> Pipeline:
    script = f"open({str(witness)!r}, 'w').write('ran')"
    return Pipeline(
        [
            ("fill", FunctionTransformer(np.full_like, kw_args={"fill_value": 0.0})),
            ("pick", FunctionTransformer(np.take, kw_args={"indices": [0]})),
            (
                "run",
                FunctionTransformer(
                    _testing.assert_run_python_script_without_output,
                    kw_args={"source_code": script},
                ),
            ),
        ]
    )


def test_the_crafted_pipeline_would_have_passed_a_prefix_list(tmp_path):
    # The premise of the fix, checked: skops itself names only sklearn.* and numpy.* types.
    path = tmp_path / "model.skops"
    sio.dump(_hostile_pipeline(tmp_path / "witness"), path)
    untrusted = sio.get_untrusted_types(file=path)
    assert untrusted and all(t.startswith(("sklearn.", "numpy.")) for t in untrusted)


def test_the_crafted_model_is_refused_and_runs_nothing(tmp_path):
    witness = tmp_path / "witness"
    path = tmp_path / "model.skops"
    sio.dump(_hostile_pipeline(witness), path)
    with pytest.raises(RadfusionError, match=r"refusing to load numpy\.full_like") as caught:
        load_model(path)
    assert str(path) in str(caught.value)
    assert not witness.exists()


def test_predict_refuses_a_crafted_model_in_a_run_folder(run_copy, tmp_path):
    data, run = run_copy
    witness = tmp_path / "witness"
    sio.dump(_hostile_pipeline(witness), run / "ehr" / "model.skops")
    cohort = Cohort.load(data)
    idx = int(cohort.split("test").index[0])
    row = tmp_path / "row.csv"
    cohort.features().loc[[idx]].to_csv(row, index=False)
    volume = cohort.studies.loc[idx, "volume_path"]
    args = ["predict", "--run", str(run), "--volume", str(volume), "--ehr", str(row)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "refusing to load" in " ".join(result.output.split())
    assert not witness.exists()


@pytest.mark.parametrize(
    "step",
    [
        FunctionTransformer(np.log1p),  # a function, even a harmless one
        StandardScaler().set_output(transform="pandas"),  # fine as it is: control
    ],
    ids=["function", "control"],
)
def test_only_the_listed_types_load(tmp_path, step):
    x = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 1.0, 0.0, 1.0]})
    model = Pipeline([("step", step), ("model", create_ehr_model("elasticnet")[-1])])
    model.fit(x, [0, 1, 0, 1])
    path = tmp_path / "m.skops"
    sio.dump(model, path)
    if isinstance(step, FunctionTransformer):
        with pytest.raises(RadfusionError, match=r"numpy\.log1p \(rebuilt by FunctionNode\)"):
            load_model(path)
    else:
        assert isinstance(load_model(path), Pipeline)


def test_a_type_outside_the_list_is_refused_by_name(tmp_path):
    from sklearn.tree import DecisionTreeClassifier

    model = Pipeline([("model", DecisionTreeClassifier())]).fit([[0.0], [1.0]], [0, 1])
    path = tmp_path / "m.skops"
    sio.dump(model, path)
    assert "sklearn.tree._classes.DecisionTreeClassifier" not in ALLOWED_TYPES
    with pytest.raises(RadfusionError, match=r"sklearn\.tree\._classes\.DecisionTreeClassifier"):
        load_model(path)


@pytest.mark.parametrize("name", sorted(EHR_MODELS))
@pytest.mark.parametrize("class_weight", ["balanced", None])
def test_every_model_we_train_round_trips(tmp_path, name, class_weight):
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    x.iloc[::5, 1] = np.nan
    y = (x["a"].fillna(0) + rng.normal(size=80) > 0).astype(int)
    model = create_ehr_model(name, class_weight=class_weight).fit(x, y)
    save_model(model, tmp_path / "m.skops")
    loaded = load_model(tmp_path / "m.skops")
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_save_refuses_a_callable_and_writes_nothing(tmp_path):
    model = Pipeline([("f", FunctionTransformer(np.log1p))]).fit([[1.0]])
    with pytest.raises(RadfusionError, match="does not persist"):
        save_model(model, tmp_path / "m.skops")
    assert list(tmp_path.iterdir()) == []
