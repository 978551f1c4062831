"""What a staff edit changed, argument by argument (the decision page's diff)."""

from __future__ import annotations

from approvals.diffs import ArgumentChange, ArgumentsDiff, DiffLine, arguments_diff, line_diff


def test_it_lists_changed_added_and_removed_arguments_in_the_models_order() -> None:
    diff = arguments_diff(
        {"command": "make deploy", "cwd": "app", "timeout": 60, "shell": True},
        {"shell": True, "command": "make deploy ", "timeout": 30, "encoding": None},
    )

    assert diff == ArgumentsDiff(
        changes=(
            ArgumentChange("command", "changed", before='"make deploy"', after='"make deploy "'),
            ArgumentChange("cwd", "removed", before='"app"'),
            ArgumentChange("timeout", "changed", before="60", after="30"),
            ArgumentChange("encoding", "added", after="null"),
        ),
        unchanged=("shell",),
    )
    assert not diff.is_empty


def test_it_diffs_text_with_line_breaks_line_by_line() -> None:
    before = "".join(f"line {n}\n" for n in range(1, 21))
    after = before.replace("line 2\n", "line two\n").replace("line 15\n", "") + "line 21\n"

    diff = arguments_diff({"path": "a.md", "content": before}, {"path": "a.md", "content": after})

    assert diff.unchanged == ("path",)
    assert diff.changes == (
        ArgumentChange(
            "content",
            "changed",
            lines=(
                DiffLine("hunk", "@@ -1,5 +1,5 @@"),
                DiffLine("context", " line 1"),
                DiffLine("remove", "-line 2"),
                DiffLine("add", "+line two"),
                DiffLine("context", " line 3"),
                DiffLine("context", " line 4"),
                DiffLine("context", " line 5"),
                DiffLine("hunk", "@@ -12,9 +12,9 @@"),
                DiffLine("context", " line 12"),
                DiffLine("context", " line 13"),
                DiffLine("context", " line 14"),
                DiffLine("remove", "-line 15"),
                DiffLine("context", " line 16"),
                DiffLine("context", " line 17"),
                DiffLine("context", " line 18"),
                DiffLine("context", " line 19"),
                DiffLine("context", " line 20"),
                DiffLine("add", "+line 21"),
            ),
        ),
    )


def test_it_diffs_added_multi_line_text_against_nothing() -> None:
    diff = arguments_diff({"path": "a.md"}, {"path": "a.md", "content": "# A\nb\n"})

    assert diff.changes == (
        ArgumentChange(
            "content",
            "added",
            lines=(
                DiffLine("hunk", "@@ -0,0 +1,2 @@"),
                DiffLine("add", "+# A"),
                DiffLine("add", "+b"),
            ),
        ),
    )


def test_it_keeps_a_diff_line_that_starts_like_a_file_header() -> None:
    lines = line_diff("title\n---\n", "title\n----\n")

    assert lines == (
        DiffLine("hunk", "@@ -1,2 +1,2 @@"),
        DiffLine("context", " title"),
        DiffLine("remove", "----"),
        DiffLine("add", "+----"),
    )


def test_it_says_when_only_line_endings_differ() -> None:
    assert line_diff("a\nb\n", "a\r\nb") == (
        DiffLine("note", "Only the line endings or the final newline differ."),
    )


def test_it_stops_a_huge_diff() -> None:
    lines = line_diff("".join(f"{n}\n" for n in range(3000)), "")

    assert len(lines) == 2001
    assert lines[0] == DiffLine("hunk", "@@ -1,3000 +0,0 @@")
    assert lines[-2] == DiffLine("remove", "-1998")
    assert lines[-1] == DiffLine("note", "… the diff goes on; only its first 2000 lines are shown.")


def test_it_finds_nothing_in_equal_arguments() -> None:
    diff = arguments_diff({"path": "a", "content": "x\n"}, {"content": "x\n", "path": "a"})

    assert diff == ArgumentsDiff(changes=(), unchanged=("path", "content"))
    assert diff.is_empty


def test_it_compares_arguments_that_are_not_objects_whole() -> None:
    assert arguments_diff(["a"], {"a": 1}) == ArgumentsDiff(
        changes=(ArgumentChange("arguments", "changed", before='["a"]', after='{"a": 1}'),),
        unchanged=(),
    )
