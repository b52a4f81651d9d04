"""The model card (README.md) of an export: what the model was trained on, how long, what it measured.

Read from the records in the model folders and, when the export comes from a training run, from the
run's config.toml and metrics.jsonl (the last logged row of each stage, and the training time: the
logged seconds per step summed over the run, snapshots and checkpoints not counted).
"""

from __future__ import annotations

import json

from libcem.config import read_toml
from libcem.generative.diffusion.guidance import interval_words
from libcem.generative.runs import StageRun

METRICS = ("loss", "psnr", "usage")  # what a stage logs that a reader can compare


def stage_summary(run: StageRun | None) -> dict:
    """{steps, planned, batch_size, precision, seconds, metrics} of a stage run ({} without one)."""
    if run is None or not run.metrics.is_file():
        return {}
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    train = read_toml(run.config).get("train", {}) if run.config.is_file() else {}
    batch = train.get("batch_size", 0)
    seconds, previous = 0.0, 0
    for row in rows:  # a row covers the steps since the previous one at images_per_s
        if row.get("images_per_s"):
            seconds += (row["step"] - previous) * batch / row["images_per_s"]
        previous = row["step"]
    last = rows[-1] if rows else {}
    return {"steps": last.get("step", 0), "planned": train.get("steps"), "batch_size": batch,
            "precision": train.get("precision", "no"), "seconds": seconds,
            "metrics": {k: last[k] for k in METRICS if k in last}}


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _stage_rows(name: str, record: dict, summary: dict) -> list[str]:
    if not summary:
        return [f"| {name} | {record.get('data', '?')} | step {record.get('step', '?')} | | | |"]
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in summary["metrics"].items())
    precision = "fp32" if summary["precision"] == "no" else summary["precision"]
    return [f"| {name} | {record.get('data', '?')} | {summary['steps']:,} of {summary['planned'] or '?':,} "
            f"(batch {summary['batch_size']}, {precision}) | {_duration(summary['seconds'])} | {metrics} |"]


def card_text(name: str, prior: dict, tokenizer: dict, prior_run: StageRun | None = None,
              tokenizer_run: StageRun | None = None) -> str:
    """The README.md of an export named `name`, from the prior's and tokenizer's records and their runs."""
    from libcem import __version__

    p_sum, t_sum = stage_summary(prior_run), stage_summary(tokenizer_run)
    size = tokenizer.get("metadata", {}).get("image_size", "?")
    prompts = prior.get("prompts", [])
    diffusion = prior.get("diffusion", {})
    lines = [
        "---", "library_name: libcem", "pipeline_tag: text-to-image",
        "tags: [libcem, text-to-image, latent-diffusion, vq-autoencoder]", "---", "",
        f"# {name}", "",
        f"A libcem text-to-image model: {size}x{size}-pixel images from prompts, a latent diffusion prior "
        f"(text encoder `{prior.get('text_encoder', '?')}`) over the codes of an EM-codebook VQ tokenizer. "
        f"Trained on `{prior.get('data', '?')}`; written by libcem {__version__}.", "",
        "## Use", "", "```python",
        "from libcem import Pipeline", "",
        f'pipe = Pipeline.from_pretrained("hf:USER/{name}")  # or a local folder',
        f"images = pipe({(prompts[0] if prompts else 'a prompt')!r}, n=4, output_type=\"pil\")",
        "```", "",
        f"or `libcem sample --model hf:USER/{name} \"PROMPT\" -n 16 --output grid.png`. "
        f"Sampling defaults: {diffusion.get('sampler', '?')}, {diffusion.get('steps', '?')} steps, "
        f"guidance {diffusion.get('guidance', '?')}{interval_words(diffusion.get('guidance_interval'))}.", "",
        "## Training", "",
        "| stage | data | steps | training time | last logged metrics |", "|---|---|---|---|---|",
        *_stage_rows("tokenizer", tokenizer, t_sum), *_stage_rows("prior", prior, p_sum), "",
        "Training time: the logged seconds per step summed over the run (snapshots and checkpoints not "
        "counted). The weights are the EMA weights used for sampling.", "",
        "## Samples", "", "![samples](samples.png)", "",
    ]
    if prompts:
        lines += ["Prompts, one row each: " + "; ".join(f"`{p}`" for p in prompts), ""]
    return "\n".join(lines)

