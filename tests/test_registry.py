"""deepresearch.registry: the one registry behind tools, policies, search backends, engines, estimators."""

import sys
from enum import Enum

import pytest

from deepresearch.registry import Registry


class Color(str, Enum):
    red = "red"
    blue = "blue"
    green = "green"


def test_register_lookup_and_errors_name_the_valid_entries():
    reg: Registry = Registry("paint", Color)

    @reg.register(Color.red)
    def red():
        return "r"

    reg.register("blue")(lambda: "b")
    assert reg.get("red") is red and reg.get(Color.red) is red and reg["blue"]() == "b"
    assert list(reg) == ["red", "blue"] and len(reg) == 2 and "red" in reg and "green" not in reg
    assert reg.valid() == ["red", "blue"]  # Enum order, registered members only
    with pytest.raises(ValueError, match=r"unknown paint 'green'; valid: red, blue"):
        reg.get("green")
    with pytest.raises(ValueError, match=r"unknown paint 'mauve'; valid: red, blue"):
        reg.get("mauve")
    with pytest.raises(ValueError, match=r"paint 'red' is already registered by test_register_lookup.*red"):
        reg.register(Color.red)(lambda: "again")
    with pytest.raises(ValueError, match=r"'mauve' is not an Color member; add it to the enum first"):
        reg.register("mauve")
    with pytest.raises(KeyError):
        reg["green"]


def test_free_names_custom_error_and_lazy_plugins(tmp_path, monkeypatch):
    class Missing(LookupError):
        pass

    import deepresearch.registry as registry_module

    reg: Registry = Registry("pigment", plugins=("paint_plugin_for_test",), error=Missing)
    # the plugin module registers itself on import, as the built-in tools do
    (tmp_path / "paint_plugin_for_test.py").write_text(
        "import deepresearch.registry as r\nr._TEST_PIGMENTS.register('zinc')(object)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module, "_TEST_PIGMENTS", reg, raising=False)
    try:
        assert "paint_plugin_for_test" not in sys.modules  # nothing imported until a lookup
        assert reg.get("zinc") is object
        with pytest.raises(Missing, match=r"unknown pigment 'lead'; valid: zinc"):
            reg.get("lead")
    finally:
        sys.modules.pop("paint_plugin_for_test", None)


def test_threads_looking_up_together_wait_for_every_plugin(tmp_path, monkeypatch):
    """The first lookups of a rollout actor's episode threads race: none may see a half-loaded registry
    (it once gave an actor's policy a prompt with one tool of four)."""
    import sys
    import threading
    import time

    from deepresearch.registry import Registry

    reg = Registry("thing", plugins=("slow_plugin_a", "slow_plugin_b"))
    for name in ("a", "b"):
        (tmp_path / f"slow_plugin_{name}.py").write_text(
            f"import time\nimport {__name__} as t\ntime.sleep(0.2)\nt.REG.register({name!r})(object())\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "REG", reg, raising=False)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(sorted(reg))) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert seen == [["a", "b"]] * 4
