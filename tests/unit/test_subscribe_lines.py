"""`calstream subscribe`'s text lines: what a forged event says cannot forge
a line or reach the terminal as a control sequence."""

from calstream.daemon.operations.subscribe import text_line


def test_a_forged_suffix_is_escaped():
    event = {"emitted_at": "2026-01-01T00:00:00.000Z", "stage": "detector1",
             "outcome": "success", "program": "01234", "observation": "001",
             "product_name": "jw01234001001_02101_00001_nrcb1",
             "outputs": [{"suffix": "rate\n2026-01-01 forged line\x1b[2J\r"}, {"suffix": "x"}]}
    line = text_line(event)
    assert "\n" not in line and "\x1b" not in line and "\r" not in line
    assert line.endswith("[rate\\n2026-01-01 forged line\\x1b[2J\\x0d,x]")
