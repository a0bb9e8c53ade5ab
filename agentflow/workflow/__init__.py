"""YAML workflows: a file that wires async handlers to topics, validated before it runs."""

from agentflow.workflow.diagnostics import Diagnostic, Severity
from agentflow.workflow.spec import Workflow, json_schema
from agentflow.workflow.validate import Checked, check_file, check_text

__all__ = [
    "Checked",
    "Diagnostic",
    "Severity",
    "Workflow",
    "check_file",
    "check_text",
    "json_schema",
]
