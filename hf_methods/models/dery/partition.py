"""DeRy's zoo partition: cut every model of a zoo into K consecutive blocks so that blocks at the same position are
functionally equivalent (similar representations at their first and last node), jointly with a clustering of the
blocks into K groups around centers ("cover set" problem), by alternating repartition, recentering and reassignment
from random starts and keeping the best partition.

Follows the official `simlarity/partition.py` (`Adamdad/DeRy@d8530b3`), with these differences, each because the
official line does not do what its text says:
- Block similarity `s(B1, B2) = sim[first1, first2] + sim[last1, last2]`, 1 for a block with itself. The official
  test `block1.model_name == block1.model_name and block1.block_index != block2.block_index` is always true on its
  left side, so any two blocks at different positions score 0 and only same-position blocks are ever compared. That is
  the default here (`compare_across_positions=False`, faithful); `True` applies the intended test (two different
  blocks of the *same* model score 0; blocks of different models are compared at any position).
- Size bounds (at most ceil(N/K)(1+eps) nodes, at least 1) hold for every model (the official code keeps the last
  model's bounds for all) and for every move and start (its random cuts ignore the upper bound, and its moves check
  the shrinking block's lower bound against the wrong block's upper bound).
- The random start draws K-1 cuts among all N-1 places (the official draws from 1..N-2, so a model's last node is
  never a block on its own) until the sizes fit the bounds.
- A repartition step tries both moves of a boundary (one node to the left, one to the right) from the current cut and
  keeps the better one if it raises the pair's similarity to its centers; recentering looks at the blocks as they are
  after that step (the official code recenters over the blocks as they were before it).
Kept as official: a group is its center plus the blocks assigned to it (a center that is one of them counts twice),
the objective is the sum of the pairwise similarities inside every group, a trial stops once more than `patience` of
its iterations did not beat the best objective of all trials so far, and the best partition over all trials is kept.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Block:
    """Nodes `start`..`end` (indices into the model's node list, inclusive) of `model`, at position `index`."""

    model: str
    index: int
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start + 1


class BlockSimilarity:
    """`s(B1, B2)` from the node similarity matrices `similarities[(model a, model b)]` (nodes of a x nodes of b)."""

    def __init__(self, similarities: Mapping[tuple[str, str], torch.Tensor], compare_across_positions: bool = False):
        self.compare_across_positions = compare_across_positions
        # plain nested lists: indexing a tensor costs microseconds, and the partition makes millions of look-ups
        self._sims = {key: torch.as_tensor(value, dtype=torch.float64).tolist() for key, value in similarities.items()}

    def __call__(self, a: Block, b: Block) -> float:
        if a == b:
            return 1.0
        if a.index != b.index and (not self.compare_across_positions or a.model == b.model):
            return 0.0
        sim = self._sims.get((a.model, b.model))
        if sim is None:
            return 0.0
        return sim[a.start][b.start] + sim[a.end][b.end]


@dataclass
class ZooPartition:
    """The best partition found. `blocks[model]`: its K blocks in order; `groups[(model, index)]`: the group (center
    number) of that block; `centers`: the K centers; `objective`: the sum of within-group similarities;
    `history`: the best objective after every iteration of every trial (never decreasing); `nodes`: the node names,
    when given."""

    blocks: dict[str, list[Block]]
    groups: dict[tuple[str, int], int]
    centers: list[Block]
    objective: float
    num_blocks: int
    history: list[float] = field(default_factory=list)
    nodes: dict[str, list[str]] | None = None
    trials_run: int = 0

    def group(self, block: Block) -> int:
        return self.groups[(block.model, block.index)]

    def node_names(self, block: Block) -> tuple[str, str]:
        if self.nodes is None:
            raise ValueError("this partition was made from node counts; give node names to partition_zoo.")
        names = self.nodes[block.model]
        return names[block.start], names[block.end]

    def to_dict(self) -> dict:
        """A JSON-able record (for reports)."""

        def row(b: Block) -> dict:
            out = {"index": b.index, "start": b.start, "end": b.end, "group": self.group(b)}
            if self.nodes is not None:
                out["first_node"], out["last_node"] = self.node_names(b)
            return out

        return {
            "num_blocks": self.num_blocks,
            "objective": self.objective,
            "centers": [vars(c) for c in self.centers],
            "blocks": {model: [row(b) for b in blocks] for model, blocks in self.blocks.items()},
            "nodes": self.nodes,
            "history": self.history,
            "trials_run": self.trials_run,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ZooPartition:
        """The partition `to_dict` recorded."""
        blocks = {m: [Block(m, r["index"], r["start"], r["end"]) for r in rows] for m, rows in data["blocks"].items()}
        groups = {(m, r["index"]): r["group"] for m, rows in data["blocks"].items() for r in rows}
        centers = [Block(**c) for c in data["centers"]]
        return cls(blocks, groups, centers, data["objective"], data["num_blocks"], list(data.get("history", [])),
                   data.get("nodes"), data.get("trials_run", 0))  # fmt: skip


def size_bounds(num_nodes: int, num_blocks: int, eps: float) -> tuple[int, int]:
    """(min, max) nodes per block: 1 and int(ceil(N/K)(1+eps)), as official."""
    return 1, int(math.ceil(num_nodes / num_blocks) * (1 + eps))


def _random_cut(model: str, n: int, k: int, bounds: tuple[int, int], rng: random.Random) -> list[Block]:
    low, high = bounds
    for _ in range(1000):
        cuts = sorted(rng.sample(range(1, n), k - 1))
        edges = [0, *cuts, n]
        if all(low <= b - a <= high for a, b in zip(edges, edges[1:])):
            break
    else:  # tight bounds: spread the nodes one at a time over blocks that still have room
        sizes = [low] * k
        for _ in range(n - k * low):
            sizes[rng.choice([i for i in range(k) if sizes[i] < high])] += 1
        edges = [0]
        for size in sizes:
            edges.append(edges[-1] + size)
    return [Block(model, i, edges[i], edges[i + 1] - 1) for i in range(k)]


def _assign(centers: list[Block], partition: dict[str, list[Block]], sim: BlockSimilarity) -> dict:
    """Each block to the center it is most similar to (the first on ties)."""
    groups = {}
    for blocks in partition.values():
        for block in blocks:
            scores = [sim(center, block) for center in centers]
            groups[(block.model, block.index)] = scores.index(max(scores))
    return groups


def _members(centers, partition, groups) -> list[list[Block]]:
    members = [[center] for center in centers]
    for blocks in partition.values():
        for block in blocks:
            members[groups[(block.model, block.index)]].append(block)
    return members


def _objective(members: list[list[Block]], sim: BlockSimilarity) -> float:
    return sum(sim(g[i], g[j]) for g in members for i in range(len(g)) for j in range(i + 1, len(g)))


def _repartition(partition, centers, groups, bounds, sim) -> None:
    for model, blocks in partition.items():
        low, high = bounds[model]
        for b in range(len(blocks) - 1):
            first, second = blocks[b], blocks[b + 1]
            c1, c2 = centers[groups[(model, b)]], centers[groups[(model, b + 1)]]
            best = sim(c1, first) + sim(c2, second)
            chosen = None
            for shift in (1, -1):  # the boundary one node to the right (first grows) or to the left
                size1, size2 = len(first) + shift, len(second) - shift
                if not (low <= size1 <= high and low <= size2 <= high):
                    continue
                new1 = Block(model, b, first.start, first.end + shift)
                new2 = Block(model, b + 1, second.start + shift, second.end)
                score = sim(c1, new1) + sim(c2, new2)
                if score > best:
                    best, chosen = score, (new1, new2)
            if chosen is not None:
                blocks[b], blocks[b + 1] = chosen


def _recenter(members: list[list[Block]], sim: BlockSimilarity) -> list[Block]:
    centers = []
    for group in members:
        totals = [sum(sim(a, b) for a in group) for b in group]
        centers.append(group[totals.index(max(totals))])
    return centers


def partition_zoo(
    similarities: Mapping[tuple[str, str], torch.Tensor],
    nodes: Mapping[str, Sequence[str] | int],
    num_blocks: int = 4,
    *,
    eps: float = 0.2,
    trials: int = 200,
    num_iter: int = 200,
    patience: int = 20,
    compare_across_positions: bool = False,
    seed: int = 0,
) -> ZooPartition:
    """Partition every model of the zoo into `num_blocks` (K) consecutive blocks of functionally equivalent nodes.

    Args:
        similarities: {(model a, model b): node similarity matrix (nodes of a x nodes of b)} for every ordered pair
            of models, each model with itself included (`zoo_similarities` makes them).
        nodes: {model: its node names (`block_nodes`) or just how many nodes it has}.
        num_blocks: K (official 4); at most the node count of the smallest model.
        eps: slack of the block size bound, at most ceil(N/K)(1+eps) nodes per block (official 0.2).
        trials / num_iter / patience: random restarts (official 200), iterations per restart (200), and how many
            iterations that do not beat the best objective a restart may spend before it stops (20).
        compare_across_positions: False (default) reproduces the official code, whose block comparison scores any
            two blocks at different positions 0; True compares blocks of different models at any position (module
            docstring).
        seed: seed of the random cuts and centers.
    """
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks (K) must be a positive integer, got {num_blocks!r}.")
    if not nodes:
        raise ValueError("partition_zoo needs at least one model in `nodes`.")
    for name, value in (("trials", trials), ("num_iter", num_iter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ValueError(f"patience must be an integer >= 0, got {patience!r}.")
    if not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}.")
    counts = {m: (v if isinstance(v, int) else len(v)) for m, v in nodes.items()}
    names = {m: list(v) for m, v in nodes.items() if not isinstance(v, int)}
    for model, n in counts.items():
        if num_blocks > n:
            raise ValueError(
                f"K={num_blocks} blocks is larger than model {model!r}'s block count ({n} nodes): every model is cut "
                f"into K non-empty blocks, so use K <= {min(counts.values())} (the smallest model's node count) or "
                "leave that model out of the zoo."
            )
    for a in counts:
        for b in counts:
            sim = similarities.get((a, b))
            if sim is None:
                raise ValueError(
                    f"similarities has no matrix for the pair ({a!r}, {b!r}); zoo_similarities(features) makes every "
                    "ordered pair, each model with itself included."
                )
            if tuple(torch.as_tensor(sim).shape) != (counts[a], counts[b]):
                raise ValueError(
                    f"similarities[({a!r}, {b!r})] has shape {tuple(torch.as_tensor(sim).shape)}, expected "
                    f"({counts[a]}, {counts[b]}) (nodes of {a!r} x nodes of {b!r})."
                )
    sim = BlockSimilarity(similarities, compare_across_positions)
    bounds = {m: size_bounds(n, num_blocks, eps) for m, n in counts.items()}
    rng = random.Random(seed)
    best, best_objective, history, trials_run = None, -math.inf, [], 0
    for _ in range(trials):
        trials_run += 1
        partition = {m: _random_cut(m, n, num_blocks, bounds[m], rng) for m, n in counts.items()}
        every = [block for blocks in partition.values() for block in blocks]
        centers = rng.sample(every, num_blocks)
        groups = _assign(centers, partition, sim)
        not_improved = 0
        for _ in range(num_iter):
            _repartition(partition, centers, groups, bounds, sim)
            centers = _recenter(_members(centers, partition, groups), sim)
            groups = _assign(centers, partition, sim)
            objective = _objective(_members(centers, partition, groups), sim)
            if objective > best_objective:
                best_objective = objective
                best = ({m: list(b) for m, b in partition.items()}, dict(groups), list(centers))
            else:
                not_improved += 1
            history.append(best_objective)
            if not_improved > patience:
                break
    blocks, groups, centers = best
    names = names if len(names) == len(counts) else None
    return ZooPartition(blocks, groups, centers, best_objective, num_blocks, history, names, trials_run)
