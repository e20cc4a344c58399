"""Atomic writes of reports and folders: a reader sees the old content or the new, never half of it."""

import pytest

from hf_methods.report import write_folder_atomic, write_text_atomic


def test_write_text_atomic(tmp_path):
    write_text_atomic(tmp_path / "r.md", "one")
    write_text_atomic(tmp_path / "r.md", "two")
    assert (tmp_path / "r.md").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["r.md"]


def test_write_folder_atomic_replaces_or_keeps_the_first(tmp_path):
    target = tmp_path / "sub" / "model"

    def writer(text):
        return lambda folder: (folder / "weights.txt").write_text(text)

    assert write_folder_atomic(target, writer("one"))  # parents are created
    assert write_folder_atomic(target, writer("two"))  # replace=True: swapped in
    assert (target / "weights.txt").read_text() == "two"
    assert not write_folder_atomic(target, writer("three"), replace=False)  # the existing folder wins
    assert (target / "weights.txt").read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no temporary or old folder left


def test_write_folder_atomic_leaves_nothing_when_writing_fails(tmp_path):
    def broken(folder):
        (folder / "half.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(tmp_path / "model", broken)
    assert list(tmp_path.iterdir()) == []
    write_folder_atomic(tmp_path / "model", lambda folder: (folder / "a").write_text("a"))
    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(tmp_path / "model", broken)
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (tmp_path / "model" / "a").read_text() == "a"


def test_outputs_get_the_usual_modes_not_the_temporary_files_0600(tmp_path):
    """Atomic writes go through mkstemp / mkdtemp (0600 / 0700): the renamed results must be readable by the other
    users of a shared machine, as plain writes would be (0644 / 0755 under umask 022)."""
    import os
    import stat

    from transformers import BertConfig, BertModel

    from hf_methods.hub import save_model_folder
    from hf_methods.report import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "report.json", "{}")
        save_model_folder(BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                               intermediate_size=8, vocab_size=10)), tmp_path / "model")  # fmt: skip
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / "model.safetensors").stat().st_mode) == 0o644


def _row(depth, params, lg, sc, **baselines):
    curve = lambda last: [{"epoch": e, "step": 10 * e, "accuracy": last * e / 2} for e in range(3)]  # noqa: E731
    row = {"depth": depth, "params": params, "learngene": {"curve": curve(lg), "final_accuracy": lg},
           "scratch": {"curve": curve(sc), "final_accuracy": sc}, "baselines": list(baselines)}  # fmt: skip
    return row | {name: {"final_accuracy": acc} for name, acc in baselines.items()}


def test_the_learngene_plot_is_readable_at_a_glance():
    """Learngene and scratch curves in their own panels, one qualitative color per depth; sizes read 100K, not
    100000; the legends sit outside the data; the depth labels beside, not on, the markers."""
    from hf_methods.report import learngene_figure

    rows = [_row(d, 100_000 * d, 0.5 + d / 40, 0.3, first=0.6, even=0.62) for d in (1, 2, 4, 6, 8, 12)]
    fig = learngene_figure({"method": "TLEG", "descendants": rows})
    fig.canvas.draw()
    ax_lg, ax_sc, ax_size = fig.axes
    assert [line.get_label() for line in ax_lg.get_lines()] == [f"depth {d}" for d in (1, 2, 4, 6, 8, 12)]
    assert len({line.get_color() for line in ax_lg.get_lines()}) == 6  # distinct colors, not a ramp of near-twins
    assert "scratch" in ax_sc.get_title() and "learngene" in ax_lg.get_title()
    ticks = [t.get_text() for t in ax_size.get_xticklabels() if t.get_text()]
    assert ticks and all(t == "0" or t[-1] in "KM" for t in ticks), ticks
    renderer = fig.canvas.get_renderer()
    for ax in (ax_sc, ax_size):  # each legend lies outside its panel's data area
        legend, area = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not legend.overlaps(area), ax.get_title()
    labels = [t for t in ax_size.texts if t.get_text().startswith("depth")]
    assert labels and all(t.get_position() != t.xy and t.xyann == (5, 6) for t in labels)


def test_the_pareto_plot_names_the_method_of_each_front_model_and_formats_sizes(tmp_path):
    from matplotlib.image import imread

    from hf_methods.pareto import pareto_figure, write_pareto_report

    entries = [
        {
            "method": m,
            "name": f"depth {d}",
            "params": 50_000 * d * (2 if m == "SWS" else 1),
            "flops": 2_000_000 * d,
            "accuracy": 0.5 + d / 30 + (0.05 if m == "SWS" else 0),
        }  # fmt: skip
        for m in ("TLEG", "SWS")
        for d in (1, 2, 4)
    ]
    write_pareto_report(entries, tmp_path, "test")
    assert imread(tmp_path / "pareto.png").shape[2] in (3, 4)
    fig = pareto_figure(entries, "test")
    fig.canvas.draw()
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert texts and all(t.split(" ")[0] in ("TLEG", "SWS") for t in texts), texts  # "SWS depth 2", not "depth 2"
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks and all(t[-1] in "KM" for t in ticks), ticks
    legend, area = fig.legends[0].get_window_extent(), fig.axes[0].get_window_extent()
    assert not legend.overlaps(area)
