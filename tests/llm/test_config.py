"""config/models.yaml: schema, offline default, errors naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantcrew.crews.coordinator import REASONING_ROLE
from plantcrew.errors import ConfigError
from plantcrew.llm import ModelRouter, load_models_config, models_config_from_dict
from plantcrew.llm.budget import BUDGET_ROLES

GOOD = """\
groups:
  triage:
    deployments:
      - model: openai/gpt-4o-mini
        api_key_env: PLANTCREW_TEST_UNSET_KEY
      - model: playbook/default
router:
  fallbacks:
    triage: [triage]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_shipped_config_runs_offline_on_the_playbook(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_models_config()
    assert set(cfg.groups) >= {"triage", "reasoning", "review"}
    for group in cfg.groups:
        assert [d.model for d in cfg.active(group)] == ["playbook/default"]
        assert any(not d.enabled for d in cfg.groups[group].deployments)  # hosted: listed, off


def test_a_deployment_whose_key_is_not_set_is_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLANTCREW_TEST_UNSET_KEY", raising=False)
    cfg = load_models_config(write(tmp_path, GOOD))
    assert [d.name for d in cfg.active("triage")] == ["triage-1"]
    assert cfg.skipped("triage") == [
        ("triage-0", "environment variable PLANTCREW_TEST_UNSET_KEY is not set")
    ]
    monkeypatch.setenv("PLANTCREW_TEST_UNSET_KEY", "sk-x")
    assert [(d.name, d.order) for d in cfg.active("triage")] == [("triage-0", 1), ("triage-1", 2)]


def test_the_playbook_is_appended_as_last_resort() -> None:
    cfg = models_config_from_dict(
        {"groups": {"g": {"deployments": [{"model": "ollama/llama3", "order": 3}]}}}
    )
    assert [(d.model, d.order) for d in cfg.active("g")] == [
        ("ollama/llama3", 3),
        ("playbook/default", 4),
    ]
    off = models_config_from_dict(
        {
            "groups": {"g": {"deployments": [{"model": "ollama/llama3"}]}},
            "router": {"playbook_last_resort": False},
        }
    )
    assert [d.model for d in off.active("g")] == ["ollama/llama3"]


@pytest.mark.parametrize(
    ("bad", "line", "field"),
    [
        (
            "        api_key_env: PLANTCREW_TEST_UNSET_KEY\n",
            "        timeout_s: -1\n",
            "groups.triage.deployments.0.timeout_s",
        ),
        ("    triage: [triage]\n", "    triage: [nowhere]\n", "router.fallbacks.triage.0"),
        (
            "      - model: playbook/default\n",
            "      - model: playbook/default\n        rpm: lots\n",
            "groups.triage.deployments.1.rpm",
        ),
        (
            "      - model: playbook/default\n",
            "      - model: nomodel\n",
            "groups.triage.deployments.1",
        ),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, bad: str, line: str, field: str) -> None:
    text = GOOD.replace(bad, bad + line if "timeout_s" in line else line)
    path = write(tmp_path, text)
    expected_line = text.splitlines().index(line.splitlines()[-1]) + 1
    with pytest.raises(ConfigError) as err:
        load_models_config(path)
    assert err.value.source == str(path)
    assert err.value.field == field
    assert err.value.line == expected_line
    assert f"{path}:{expected_line}" in str(err.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "  : [\n")
    with pytest.raises(ConfigError) as err:
        load_models_config(path)
    assert err.value.line is not None and err.value.line >= GOOD.count("\n")


def test_duplicate_deployment_names_are_refused(tmp_path: Path) -> None:
    text = GOOD.replace(
        "      - model: playbook/default\n",
        "      - model: playbook/default\n        name: triage-0\n",
    )
    with pytest.raises(ConfigError, match="used twice"):
        load_models_config(write(tmp_path, text))


def test_secrets_are_not_accepted_in_the_file() -> None:
    with pytest.raises(ConfigError, match="api_key_env"):
        models_config_from_dict(
            {
                "groups": {
                    "g": {
                        "deployments": [{"model": "openai/gpt-4o", "extra": {"api_key": "sk-123"}}]
                    }
                }
            }
        )


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_models_config(tmp_path / "absent.yaml")


def test_router_from_the_shipped_file_knows_its_groups(router: ModelRouter) -> None:
    assert {"triage", "reasoning", "review"} <= set(router.groups)
    assert router.deployments("review")[-1].is_playbook


def test_budgets_are_read_and_checked(tmp_path: Path) -> None:
    shipped = load_models_config()
    assert shipped.budgets.per_incident_usd is not None and shipped.budgets.warn_at == 0.8
    text = GOOD + "budgets:\n  per_day_usd: 5\n  warn_at: 1.5\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_models_config(path)
    assert err.value.field == "budgets.warn_at"
    assert err.value.line == text.splitlines().index("  warn_at: 1.5") + 1
    negative = write(tmp_path, GOOD + "budgets:\n  per_agent_day_usd: {reviewer: -1}\n")
    with pytest.raises(ConfigError, match="per_agent_day_usd"):
        load_models_config(negative)


def test_a_per_agent_budget_must_name_a_role(tmp_path: Path) -> None:
    # the Coordinator checks a step's budget by role when it dispatches it: a key naming an
    # agent id (or a typo) would never apply, so it is refused where it is written
    text = GOOD + "budgets:\n  per_agent_day_usd:\n    reviewer: 2.0\n    operator-1: 1.0\n"
    with pytest.raises(ConfigError) as err:
        load_models_config(write(tmp_path, text))
    assert err.value.line == 11 and err.value.field == "budgets.per_agent_day_usd"
    assert "operator-1" in err.value.reason and "diagnostic, operator, safety, reviewer" in str(
        err.value
    )


def test_the_budget_roles_are_the_roles_the_coordinator_budgets() -> None:
    assert set(REASONING_ROLE.values()) == set(BUDGET_ROLES)
