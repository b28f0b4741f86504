"""README's quick start runs as written: a newcomer hardens a softmax-headed Keras model."""

import os
import re
import subprocess
import sys

import robustkit as rk

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_start():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Quick start in Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quick_start_hardens_a_softmax_model(tmp_path):
    code = quick_start()
    # it starts from a tutorial-style model and uses the contract's fix
    assert 'activation="softmax"' in code and "rk.models.logits_of(" in code
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO},
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    row = next(line for line in run.stdout.splitlines() if line.startswith("| robust_model"))
    clean, robust = (float(v) for v in row.split("|")[2:4])
    assert clean > 85.0 and 40.0 < robust < clean  # trained, and robust to a degree
    path = tmp_path / "saved_models" / "digits_tutorial_trades"
    loaded, record = rk.load(str(path))
    assert record.training.defense == "trades" and record.threat.eps == 0.1
    assert round(100 * record.robust_accuracy, 2) == robust and record.headline.n_examples == 359
    with open(path / "MODEL_CARD.md", encoding="utf-8") as f:
        card = f.read()
    assert (
        "hardened with **trades**" in card
        and "| PGD-40 (linf, eps=0.1, step=0.025) | 359 |" in card
    )
    x, _ = rk.data.load("digits", "test")
    assert loaded.serve(x[:2]).shape == (2, 10)
