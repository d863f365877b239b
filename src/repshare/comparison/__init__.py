"""The shared comparison schema every memory-saving method writes, and the report-section
contract every method's stage hands to the dashboard."""

from repshare.comparison.rows import ComparisonRow, read_rows, write_rows
from repshare.comparison.section import Figure, ReportSection, Table, read_section, write_section

__all__ = [
    "ComparisonRow", "read_rows", "write_rows",
    "Figure", "ReportSection", "Table", "read_section", "write_section",
]
