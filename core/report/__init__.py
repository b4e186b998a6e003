"""Bias reports of a run: built as a JSON-able dict (build), checked against its schema (schema), written as
Markdown (markdown) or one self-contained HTML page (html); the CI gate's verdict on a report (audit)."""
from core.report.build import FORMATS, build_report, to_json
from core.report.html import to_html
from core.report.markdown import to_markdown
from core.report.schema import (
                                ASSOCIATION_DEFINITION,
                                FLAGS_DEFINITION,
                                REPORT_SCHEMA,
                                SCHEMA_VERSION,
                                flags_definition,
                                validate_report,
)

__all__ = ["ASSOCIATION_DEFINITION", "FLAGS_DEFINITION", "FORMATS", "REPORT_SCHEMA", "SCHEMA_VERSION", "build_report",
           "flags_definition", "to_html", "to_json", "to_markdown", "validate_report"]
