"""docs/faults.md shows the fault suite's cases and outcomes as the suite has them."""

from tests.integration.test_faults import BEGIN, END, TABLE_DOC, table


def test_the_fault_table_in_the_docs_is_the_suites() -> None:
    text = TABLE_DOC.read_text(encoding="utf-8")
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert shown == table(), (
        "docs/faults.md is stale: python -c 'from tests.integration.test_faults import "
        "write_table; write_table()'")
