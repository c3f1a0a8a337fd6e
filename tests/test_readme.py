"""The README's Python example runs, and `.ci/run` uses the README's test command."""
import re
from pathlib import Path

import seglab

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_example_runs(tiny_synthetic, tmp_path, monkeypatch):
    demo = tmp_path / "seglab_demo"
    demo.mkdir()
    (demo / "data").symlink_to(tiny_synthetic)
    seglab.save_model(seglab.create_model("unet", num_classes=6, base_channels=4), demo / "best.safetensors",
                      classes=["grass", "water", "sand", "circle", "rectangle", "triangle"])
    monkeypatch.chdir(tmp_path)
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].labels.shape == (48, 64)


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    assert len(blocks) == 2, "README states exactly two set-up commands"
    test_cmd = blocks[1].strip().split("&& ", 2)[-1]  # after venv creation and activation
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
    assert "seglab demo" in blocks[0]
