"""A factorized synthetic data set (HaBa) as a `PreTrainedModel`: stored bases, shared hallucinators and the learned
inner-loop learning rate, saved with safetensors, loaded with the Auto classes and pushed with a card; the set it
generates exports as a `datasets.Dataset` and pushes as a Hub dataset repo with a dataset card.

Written from the paper's description and a reading of the official code (Huage001/DatasetFactorization@60c9128,
`utils.StyleTranslator`, `utils.StyleTranslatorSharedDataset`); the names are ours. How the bases and hallucinators
are learned is `hf_methods.trainers.haba_distiller.HaBaDistiller`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ...modeling import HfMethodsModel
from .configuration_haba import HaBaConfig


class Hallucinator(nn.Module):
    """`H(b) = ConvT_k(scale * Conv_k(b) + shift)`: an unpadded k x k convolution (base_channels -> hidden), an
    affine map with one scale and one shift per channel and position of its output ((H-k+1) x (W-k+1)), and a
    transposed convolution back to the image size (hidden -> num_channels). Starts as scale 1, shift 0."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, image_hw, kernel_size: int):
        super().__init__()
        height, width = image_hw
        inner = (1, hidden_channels, height - kernel_size + 1, width - kernel_size + 1)
        self.encoder = nn.Conv2d(in_channels, hidden_channels, kernel_size)
        self.scale = nn.Parameter(torch.ones(inner))
        self.shift = nn.Parameter(torch.zeros(inner))
        self.decoder = nn.ConvTranspose2d(hidden_channels, out_channels, kernel_size)

    def forward(self, bases: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.scale * self.encoder(bases) + self.shift)

    @torch.no_grad()
    def init_identity(self, std: float = 0.0) -> None:
        """Centre-tap kernels: hidden channel h copies base channel h % in_channels, output channel o averages the
        hidden channels h with h % out_channels == o; biases 0. The image's interior is then the base (its
        kernel_size // 2 border is 0). N(0, std) noise is added to both kernels."""
        k = self.encoder.kernel_size[0]
        hidden, inputs, outputs = self.encoder.out_channels, self.encoder.in_channels, self.decoder.out_channels
        encoder, decoder = torch.zeros_like(self.encoder.weight), torch.zeros_like(self.decoder.weight)
        for h in range(hidden):
            encoder[h, h % inputs, k // 2, k // 2] = 1.0
        counts = torch.bincount(torch.arange(hidden) % outputs, minlength=outputs).clamp_min(1)
        for h in range(hidden):
            decoder[h, h % outputs, k // 2, k // 2] = 1.0 / counts[h % outputs]  # ConvTranspose2d: in x out x k x k
        init.copy_(self.encoder.weight, encoder + std * torch.randn_like(encoder))
        init.copy_(self.decoder.weight, decoder + std * torch.randn_like(decoder))
        init.zeros_(self.encoder.bias)
        init.zeros_(self.decoder.bias)


@dataclass
class HaBaOutput(ModelOutput):
    """Generated images and what they are made of: `pixel_values` (N x C x H x W), `labels` (class of each), and the
    `base_ids` (index of the base within its class) and `hallucinator_ids` that made each."""

    pixel_values: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    base_ids: torch.Tensor | None = None
    hallucinator_ids: torch.Tensor | None = None


class HaBaDataset(HfMethodsModel, PreTrainedModel):
    """Bases (`num_labels x images_per_class x base_channels x H x W`, a Parameter), `hallucinators` (a ModuleList)
    and `synthetic_lr` (the learned learning rate of the distillation's inner loop, the one to train on the set with).

    - `forward(class_ids, base_ids, hallucinator_ids)`: image i = `H_{hallucinator_ids[i]}(bases[class_ids[i],
      base_ids[i]])` (the three broadcast together); differentiable in the bases and the hallucinators.
    - `generate(class_ids=None, hallucinator_ids=None)`: every base of those classes through every one of those
      hallucinators (default: the whole generated set, `num_labels * ipc * n` images), ordered class, base,
      hallucinator.
    - `to_torch_dataset()`: a `torch.utils.data.Dataset` of `num_labels * ipc` items; each fetch returns a base through
      a random hallucinator (the official `StyleTranslatorSharedDataset`), so every one of the `n * ipc` images of a
      class is reachable.
    - `to_datasets()` / `push_dataset_to_hub(repo_id)`: the generated set as a `datasets.Dataset` (every base x
      hallucinator pair), and on the Hub as a dataset repo with a dataset card.
    - `init_bases_from(images, labels)`: bases drawn from real images (the official `pix_init='real'`).
    """

    config_class = HaBaConfig
    method_name = "HaBa"
    base_model_prefix = "haba"
    main_input_name = "class_ids"

    def __init__(self, config: HaBaConfig):
        super().__init__(config)
        height, width = config.image_hw
        shape = (config.num_labels, config.images_per_class, config.base_channels, height, width)
        self.bases = nn.Parameter(torch.randn(shape))
        self.hallucinators = nn.ModuleList(
            Hallucinator(
                config.base_channels,
                config.hallucinator_channels,
                config.num_channels,
                (height, width),
                config.kernel_size,
            )  # fmt: skip
            for _ in range(config.num_hallucinators)
        )
        self.synthetic_lr = nn.Parameter(torch.tensor(float(config.initial_synthetic_lr)))
        self.post_init()

    def _init_weights(self, module):
        """Bases N(0, 1) (the official init before `pix_init='real'` replaces them), scale 1 and shift 0, the
        synthetic learning rate at `initial_synthetic_lr`; the convolutions keep PyTorch's default init (as the
        official code), or start near the identity (`hallucinator_init="identity"`). The
        `transformers.initialization` functions skip tensors loaded from a checkpoint."""
        if isinstance(module, HaBaDataset):
            init.normal_(module.bases, mean=0.0, std=1.0)
            init.constant_(module.synthetic_lr, float(self.config.initial_synthetic_lr))
        elif isinstance(module, Hallucinator):
            init.ones_(module.scale)
            init.zeros_(module.shift)
            if self.config.hallucinator_init == "identity":
                module.init_identity(self.config.hallucinator_init_std)

    # --- sizes ----------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.config.num_labels

    @property
    def images_per_class(self) -> int:
        return self.config.images_per_class

    @property
    def num_hallucinators(self) -> int:
        return len(self.hallucinators)

    @property
    def learning_rate(self) -> float:
        """The learned inner-loop learning rate (`synthetic_lr`) as a number: the one to train a network on the set
        with."""
        return float(self.synthetic_lr.detach())

    @property
    def num_images(self) -> int:
        """Images in the generated set: every base through every hallucinator."""
        return self.num_classes * self.images_per_class * self.num_hallucinators

    def stored_floats(self) -> dict[str, int]:
        """What the set costs to store: the bases, the hallucinators, the learning rate, and their total."""
        hallucinators = sum(p.numel() for p in self.hallucinators.parameters())
        out = {"bases": self.bases.numel(), "hallucinators": hallucinators, "synthetic_lr": 1}
        out["total"] = sum(out.values())
        return out

    # --- images ---------------------------------------------------------------------------------------------------
    def init_bases_from(self, images: torch.Tensor, labels, generator: torch.Generator | None = None) -> torch.Tensor:
        """Set the bases to `images_per_class` random real images of each class (drawn without replacement with
        `generator`); a one-channel base from a colour image is its channel mean (the official `--single_channel`).
        Returns the indices of the images used, class by class."""
        labels = torch.as_tensor(labels)
        ipc, chosen = self.images_per_class, []
        if tuple(images.shape[1:]) != (self.config.num_channels, *self.config.image_hw):
            raise ValueError(
                f"images have shape {tuple(images.shape[1:])} per image but the set makes "
                f"{(self.config.num_channels, *self.config.image_hw)} (num_channels, height, width)."
            )
        for c in range(self.num_classes):
            pool = torch.nonzero(labels == c).flatten()
            if len(pool) < ipc:
                raise ValueError(f"class {c} has {len(pool)} real images, fewer than images_per_class={ipc}.")
            chosen.append(pool[torch.randperm(len(pool), generator=generator)[:ipc]])
        chosen = torch.stack(chosen)
        picked = images[chosen.flatten()].to(self.bases.dtype)
        if self.config.base_channels != self.config.num_channels:
            picked = picked.mean(1, keepdim=True).expand(-1, self.config.base_channels, -1, -1)
        with torch.no_grad():
            self.bases.copy_(picked.reshape(self.bases.shape))
        return chosen

    def hallucinate(self, bases: torch.Tensor, hallucinator_ids) -> torch.Tensor:
        """`bases` (N x base_channels x H x W) through hallucinator `hallucinator_ids` (one int for all, or one id per
        base)."""
        if isinstance(hallucinator_ids, int):
            self._check_ids(torch.tensor([hallucinator_ids]), self.num_hallucinators, "hallucinator_ids")
            return self.hallucinators[hallucinator_ids](bases)
        ids = torch.as_tensor(hallucinator_ids, device=bases.device).reshape(-1)
        self._check_ids(ids, self.num_hallucinators, "hallucinator_ids")
        out = bases.new_empty((len(bases), self.config.num_channels, *self.config.image_hw))
        for j in ids.unique().tolist():
            rows = ids == j
            out = out.index_put((rows,), self.hallucinators[j](bases[rows]))
        return out

    @staticmethod
    def _check_ids(ids: torch.Tensor, size: int, name: str) -> None:
        if ids.numel() and (ids.min() < 0 or ids.max() >= size):
            raise ValueError(f"`{name}` must be in [0, {size - 1}], got values from {int(ids.min())} to "
                             f"{int(ids.max())}.")  # fmt: skip

    def forward(self, class_ids=None, base_ids=None, hallucinator_ids=None, **kwargs) -> HaBaOutput:
        """Image i = `H_{hallucinator_ids[i]}(bases[class_ids[i], base_ids[i]])`; the three broadcast together (an
        int applies to all; `base_ids` defaults to 0, `hallucinator_ids` to 0)."""
        device = self.bases.device
        given = (class_ids, base_ids, hallucinator_ids)
        as_ids = [torch.as_tensor(v if v is not None else 0, device=device).long() for v in given]
        class_ids, base_ids, hallucinator_ids = (t.reshape(-1) for t in torch.broadcast_tensors(*as_ids))
        self._check_ids(class_ids, self.num_classes, "class_ids")
        self._check_ids(base_ids, self.images_per_class, "base_ids")
        images = self.hallucinate(self.bases[class_ids, base_ids], hallucinator_ids)
        return HaBaOutput(pixel_values=images, labels=class_ids, base_ids=base_ids, hallucinator_ids=hallucinator_ids)

    def generate(self, class_ids=None, hallucinator_ids=None) -> HaBaOutput:
        """Every base of `class_ids` (default all) through every hallucinator of `hallucinator_ids` (default all),
        ordered class, base, hallucinator: `len(class_ids) * ipc * len(hallucinator_ids)` images."""
        device = self.bases.device
        classes = torch.arange(self.num_classes) if class_ids is None else torch.as_tensor(class_ids).reshape(-1)
        halls = (
            torch.arange(self.num_hallucinators)
            if hallucinator_ids is None
            else torch.as_tensor(hallucinator_ids).reshape(-1)
        )
        grid = torch.cartesian_prod(classes.long(), torch.arange(self.images_per_class), halls.long()).reshape(-1, 3)
        grid = grid.to(device)
        return self.forward(class_ids=grid[:, 0], base_ids=grid[:, 1], hallucinator_ids=grid[:, 2])

    def to_torch_dataset(self, seed: int | None = None) -> HaBaTorchDataset:
        """A `torch.utils.data.Dataset` of `num_labels * ipc` items (the official `StyleTranslatorSharedDataset`):
        item i is base i (class i // ipc) through a hallucinator drawn at random at each fetch (`seed` seeds the
        draws). The images are a snapshot of the set now (computed once, without gradients)."""
        return HaBaTorchDataset(self, seed=seed)

    # --- export ---------------------------------------------------------------------------------------------------
    def label_names(self) -> list[str]:
        return [str(self.config.id2label.get(i, i)) for i in range(self.num_classes)]

    def to_datasets(self, with_ids: bool = True):
        """The whole generated set (every base through every hallucinator) as a `datasets.Dataset`: `pixel_values`
        (float32, channels x height x width, in the standardized space of `config.image_mean` / `image_std`),
        `labels` (a `ClassLabel` with the set's label names) and, with `with_ids`, `base_id` and `hallucinator_id`."""
        from datasets import Array3D, ClassLabel, Dataset, Features, Value

        with torch.no_grad():
            out = self.generate()
        height, width = self.config.image_hw
        columns = {
            "pixel_values": Array3D(shape=(self.config.num_channels, height, width), dtype="float32"),
            "labels": ClassLabel(names=self.label_names()),
        }
        data = {"pixel_values": out.pixel_values.detach().float().cpu().numpy(), "labels": out.labels.tolist()}
        if with_ids:
            columns.update(base_id=Value("int32"), hallucinator_id=Value("int32"))
            data.update(base_id=out.base_ids.tolist(), hallucinator_id=out.hallucinator_ids.tolist())
        return Dataset.from_dict(data, features=Features(columns))

    def dataset_card(self, repo_or_path, results: dict | None = None):
        """The dataset card of the generated set (`huggingface_hub.DatasetCard`): metadata (license, task, tags, size
        category, pretty name, `library_name`) and a body saying what it is, how it was made and how to load it."""
        from .cards import haba_dataset_card

        return haba_dataset_card(self, repo_or_path, results)

    def save_generated_dataset(self, path, results: dict | None = None):
        """`to_datasets().save_to_disk(path)` plus the dataset card as `path/README.md`. Returns the Dataset."""
        from pathlib import Path

        dataset = self.to_datasets()
        dataset.save_to_disk(str(path))
        self.dataset_card(Path(path), results).save(str(Path(path) / "README.md"))
        return dataset

    def push_dataset_to_hub(
        self,
        repo_id: str,
        *,
        results: dict | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
        dataset=None,
    ):
        """Push the generated set (`to_datasets()`, or `dataset` when given, e.g. one read back from disk) to the
        dataset repo `repo_id`, then its dataset card (merged into the metadata `datasets` writes: its features and
        data files stay declared). Returns the card's commit info."""
        from .cards import push_generated_dataset

        return push_generated_dataset(self, repo_id, results=results, private=private, token=token,
                                      commit_message=commit_message, revision=revision, dataset=dataset)  # fmt: skip

    def model_card(self, repo_or_path, results: dict | None = None):
        from .cards import haba_model_card

        return haba_model_card(self, repo_or_path, results)


class HaBaTorchDataset(torch.utils.data.Dataset):
    """`num_labels * ipc` items; item i is base i through a random hallucinator at each fetch (see
    `HaBaDataset.to_torch_dataset`). Returns {"pixel_values", "labels"}. The n hallucinations of every base are
    computed once when the dataset is made, so a fetch only draws which one; draws come from `random.Random(seed)`
    (with DataLoader workers, each worker draws from its own copy)."""

    def __init__(self, model: HaBaDataset, seed: int | None = None):
        with torch.no_grad():
            out = model.generate()
        n, ipc = model.num_hallucinators, model.images_per_class
        self.images = out.pixel_values.detach().cpu().reshape(model.num_classes * ipc, n, *out.pixel_values.shape[1:])
        self.ipc, self.num_hallucinators = ipc, n
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        j = self.rng.randrange(self.num_hallucinators)
        return {"pixel_values": self.images[index, j], "labels": index // self.ipc}
