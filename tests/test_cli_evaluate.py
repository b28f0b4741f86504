"""``robustkit evaluate`` (attacks, suites, --json, --update, plain models), ``robustkit
report`` and the new ``robustkit train`` flags, used the way a user types them."""

import dataclasses
import datetime
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit import cli
from robustkit.export import Check, Measurement, read_record, write_record


def run_cli(argv, capsys):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def export_path(digits_at_model, tmp_path_factory):
    """The PGD-AT digits model as a robustkit export (L-inf 0.1, one PGD-40 measurement)."""
    path = str(tmp_path_factory.mktemp("evaluate") / "digits_at")
    rk.export(
        digits_at_model,
        path,
        metadata={
            "dataset": "digits",
            "threat_model": {"norm": "linf", "eps": 0.1},
            "defense": "standard",
            "clean_accuracy": 0.95,
            "robust_accuracy": 0.8,
            "attack": "PGD-40 (linf, eps=0.1, step=0.025)",
            "n_examples": 359,
        },
    )
    return path


@pytest.fixture
def copy(export_path, tmp_path):
    """A fresh copy of the export (tests that --update write into it)."""
    path = str(tmp_path / "digits_at")
    shutil.copytree(export_path, path)
    return path


def _card(path):
    with open(os.path.join(path, "MODEL_CARD.md"), encoding="utf-8") as f:
        return f.read()


def _subset(n):
    return rk.data.subset(*rk.data.load("digits", "test"), n, seed=0)


def test_json_update_appends_the_measurement_to_record_and_card(copy, digits_at_model, capsys):
    code, out, err = run_cli(
        ["evaluate", copy, "--attack", "apgd-ce", "--n", 60, "--json", "--update"], capsys
    )
    assert code == 0, err
    result = json.loads(out)  # stdout is the JSON only; progress went to stderr
    assert "60/60" in err  # the progress bar
    (m,) = result["measurements"]
    assert m["attack"] == "APGD-CE (linf, eps=0.1)" and m["n_examples"] == 60
    assert result["updated"] is True and (result["norm"], result["eps"]) == ("linf", 0.1)
    # the clean accuracy is the model's on the same 60 examples, computed by hand
    x, y = _subset(60)
    pred = np.argmax(digits_at_model.predict(x, verbose=0), -1)
    assert m["clean_accuracy"] == pytest.approx(np.mean(pred == y))
    # APGD-CE (100 steps) is at least as strong as FGSM, and lowers accuracy
    fgsm = rk.evaluation.measure(digits_at_model, (x, y), rk.attacks.FGSM(eps=0.1))
    assert m["robust_accuracy"] <= fgsm.robust_accuracy + 1 / 60
    assert m["robust_accuracy"] < m["clean_accuracy"]
    record = read_record(copy)
    assert len(record.measurements) == 2
    assert dataclasses.asdict(record.measurements[-1]) == m
    card = _card(copy)
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    row = next(line for line in card.splitlines() if line.startswith("| APGD-CE"))
    assert "| 60 |" in row and today in row


def test_suite_aa_update_writes_checks_into_the_card(copy, capsys):
    card_before = _card(copy)
    assert "AutoAttack, the field's standard check, has not been run" in card_before
    code, out, err = run_cli(["evaluate", copy, "--suite", "aa", "--n", 30, "--update"], capsys)
    assert code == 0, err
    assert "| Defense | None | AA | Worst case |" in out and "check verdict(s)" in out
    record = read_record(copy)
    m = record.measurements[-1]
    assert m.attack == "AA (linf, eps=0.1)" and m.suite == "aa" and m.n_examples == 30
    assert m.robust_accuracy < m.clean_accuracy
    assert len(record.checks) == 5 and {c.suite for c in record.checks} == {"aa"}
    verdicts = {c.name: c.verdict for c in record.checks}
    assert verdicts["black-box not stronger"] == "skipped"  # no surrogate in the AA suite
    assert verdicts["large eps reaches ~0 %"] == "passed"
    card = _card(copy)
    assert "| AA (linf, eps=0.1) (suite aa) | 30 |" in card
    assert "- black-box not stronger: skipped (suite aa, " in card
    assert "- large eps reaches ~0 %: passed (suite aa, " in card
    assert "has not been run" not in card and "Not run." not in card
    # a second suite run replaces that suite's verdicts instead of piling them up
    code, _, err = run_cli(
        ["evaluate", copy, "--suite", "aa", "--n", 10, "--update", "--quiet"], capsys
    )
    assert code == 0, err
    again = read_record(copy)
    assert len(again.checks) == 5 and len(again.measurements) == 3


def test_suite_aa_runs_in_the_exports_own_norm(digits_at_model, tmp_path, capsys):
    path = str(tmp_path / "digits_l2")
    threat = {"norm": "l2", "eps": 0.5}
    rk.export(digits_at_model, path, metadata={"dataset": "digits", "threat_model": threat})
    argv = ["evaluate", path, "--suite", "aa", "--n", 20, "--no-checks", "--json", "--quiet"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    (m,) = json.loads(out)["measurements"]
    assert m["attack"] == "AA (l2, eps=0.5)" and m["suite"] == "aa"
    assert m["robust_accuracy"] <= m["clean_accuracy"]


def test_cw_on_an_linf_export_runs_at_the_l2_radius(export_path, capsys):
    code, out, err = run_cli(
        ["evaluate", export_path, "--attack", "ddn", "--n", 40, "--json", "--quiet"], capsys
    )
    assert code == 0, err
    (m,) = json.loads(out)["measurements"]
    # digits' customary L2 radius (robustkit.threat.DEFAULT_EPS), not the export's L-inf 0.1
    assert m["attack"] == "DDN (l2, eps=0.5)" and m["config"]["eps"] == 0.5
    assert m["robust_accuracy"] < m["clean_accuracy"]
    code, _, err = run_cli(["evaluate", export_path, "--attack", "cw", "--norm", "linf"], capsys)
    assert code == 2 and "argument --attack" in err and "L2 attack" in err
    code, _, err = run_cli(["evaluate", export_path, "--attack", "pgd-x"], capsys)
    assert code == 2 and "argument --attack" in err and "apgd-t" in err


@pytest.fixture(scope="module")
def plain_models(digits_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain")
    keras_file = str(folder / "digits.keras")
    digits_model.save(keras_file)
    saved = str(folder / "digits_savedmodel")
    digits_model.export(saved, verbose=False)  # a plain SavedModel: no robustkit.json
    return keras_file, saved


def test_plain_keras_file_and_savedmodel_with_flags(plain_models, digits_model, capsys):
    keras_file, saved = plain_models
    x, y = _subset(100)
    clean = np.mean(np.argmax(digits_model.predict(x, verbose=0), -1) == y)
    flags = ["--dataset", "digits", "--norm", "linf", "--eps", 0.1, "--n", 100, "--json"]
    results = []
    for path in (keras_file, saved):
        code, out, err = run_cli(["evaluate", path, "--attack", "fgsm", *flags], capsys)
        assert code == 0, err
        results.append(json.loads(out))
    (k,), (s,) = (r["measurements"] for r in results)
    assert [r["kind"] for r in results] == ["keras", "savedmodel"]
    assert k["clean_accuracy"] == s["clean_accuracy"] == pytest.approx(clean)
    assert k["robust_accuracy"] == pytest.approx(s["robust_accuracy"])  # same model, FGSM
    assert k["robust_accuracy"] < clean - 0.1  # the undefended model falls to FGSM


def test_plain_models_without_flags_or_with_update_are_refused(plain_models, capsys, tmp_path):
    keras_file, saved = plain_models
    for path in (keras_file, saved):
        code, out, err = run_cli(["evaluate", path, "--eps", 0.1], capsys)
        assert code == 2 and "argument PATH" in err
        assert "--norm, --eps and --dataset" in err and "missing: --norm, --dataset" in err
    flags = ["--dataset", "digits", "--norm", "linf", "--eps", 0.1]
    code, _, err = run_cli(["evaluate", saved, *flags, "--update"], capsys)
    assert code == 2 and "argument --update" in err and "not a robustkit export" in err
    # a tutorial model ending in softmax: refused, naming the fix
    softmax = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(10, activation="softmax")])  # fmt: skip
    path = str(tmp_path / "softmax.keras")
    softmax.save(path)
    code, _, err = run_cli(["evaluate", path, *flags], capsys)
    assert code == 2 and "argument PATH" in err and "rk.models.logits_of" in err


# ------------------------------------------------------------------ report
def _record_export(path, defense, norm, measurements, checks=()):
    model = rk.models.small_cnn((8, 8, 1), width=4, dense=8)
    eps = 8 / 255 if norm == "linf" else 0.5
    rk.export(model, path, metadata={"dataset": "cifar10", "defense": defense,
                                     "threat_model": {"norm": norm, "eps": eps}})  # fmt: skip
    record = read_record(path).replace(measurements=tuple(measurements), checks=tuple(checks))
    write_record(path, record)
    return path


def _m(attack, norm, clean, robust, n=10000, date="2026-01-01", **kw):
    eps = "0.03137" if norm == "linf" else "0.5"
    return Measurement(f"{attack} ({norm}, eps={eps})", clean, robust, n, date=date, **kw)


def test_report_assembles_table1_from_exports(tmp_path, capsys):
    # the paper's Table 1 numbers (SPEC §4) for Standard and TRADES, hand-entered
    std_linf = _record_export(str(tmp_path / "std_linf"), "standard", "linf", [
        _m("PGD-40", "linf", 0.8339, 0.4238),
        _m("PGD-40", "linf", 0.9, 0.7, n=100, date="2026-02-01"),  # fewer examples: not used
        _m("AA", "linf", 0.8339, 0.3901, suite="aa"),
    ])  # fmt: skip
    std_l2 = _record_export(str(tmp_path / "std_l2"), "standard", "l2", [
        _m("PGD-40", "l2", 0.8397, 0.6169), _m("CW", "l2", 0.8397, 0.3096),
    ])  # fmt: skip
    flagged = Check("large eps reaches ~0 %", True, "PGD-40 at eps 1 leaves 40 %", suite="linf")
    trades = _record_export(str(tmp_path / "trades_linf"), "trades", "linf", [
        _m("AA", "linf", 0.8070, 0.4271), _m("PGD-40", "linf", 0.8070, 0.4629),
    ], checks=[flagged])  # fmt: skip
    out = tmp_path / "tables" / "table1.md"
    code, printed, err = run_cli(["report", trades, std_linf, std_l2, "--out", out], capsys)
    assert code == 0, err and f"Table written to {out}" in printed
    lines = out.read_text().splitlines()
    assert lines[0] == "| cifar10 | L∞ None | PGD-40 | AA | L2 None | PGD-40 | CW |"
    assert lines[2] == "| Standard | 83.39 | 42.38 | 39.01 | 83.97 | 61.69 | 30.96 |"
    assert lines[3] == "| TRADES † | 80.70 | 46.29 | 42.71 | – | – | – |"
    text = "\n".join(lines)
    assert "† TRADES: gradient-masking check(s) fired: large eps reaches ~0 %." in text
    assert f"- Standard, l2: {std_l2} (PGD-40 n=10000 2026-01-01; CW n=10000 2026-01-01)" in text
    # to stdout without --out
    code, printed, _ = run_cli(["report", std_linf], capsys)
    assert code == 0 and printed.splitlines()[2] == "| Standard | 83.39 | 42.38 | 39.01 |"


def test_report_bad_input_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["report", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "argument PATH" in err
    empty = str(tmp_path / "empty")
    rk.export(rk.models.small_cnn((8, 8, 1), width=4, dense=8), empty)
    code, _, err = run_cli(["report", empty, "--out", str(tmp_path / "t.md")], capsys)
    assert code == 2 and "holds a measurement" in err and not (tmp_path / "t.md").exists()


# ------------------------------------------------------------------- train
def test_train_training_options_reach_the_config():
    """``--augment --val-size --mixed-precision --backup-dir --deterministic`` become the
    TrainConfig fields of the same names; a robustkit whose TrainConfig lacks one refuses
    the flag (exit 2 naming it) instead of ignoring it."""
    from robustkit.app import TrainConfig
    from robustkit.cli.train import config_from_args

    argv = ["train", "--augment", "--val-size", "100", "--mixed-precision", "--backup-dir",
            "bk", "--deterministic"]  # fmt: skip
    args = cli.build_parser().parse_args(argv)
    expected = {"augment": True, "val_size": 100, "mixed_precision": True,
                "backup_dir": "bk", "deterministic": True}  # fmt: skip
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if set(expected) <= fields:
        config = config_from_args(args)
        assert {k: getattr(config, k) for k in expected} == expected
    else:
        first = next(k for k in expected if k not in fields)
        with pytest.raises(cli.UsageError, match=f"argument --{first.replace('_', '-')}"):
            config_from_args(args)
    plain = config_from_args(cli.build_parser().parse_args(["train"]))
    assert plain == TrainConfig()  # the flags left out change nothing


def test_tf_saved_model_is_plain(plain_models):
    """The plain SavedModel of these tests is what users have: a serve endpoint, no record."""
    _, saved = plain_models
    assert not os.path.exists(os.path.join(saved, "robustkit.json"))
    assert tf.saved_model.load(saved).serve(np.zeros((1, 8, 8, 1), "float32")).shape == (1, 10)
