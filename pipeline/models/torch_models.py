"""Neural families in torch: `neural_network` (an MLP) and `transformer` (FT-Transformer style: one
linear embedding per numeric feature, a CLS token, pre-norm encoder blocks, a head on CLS), trained
through Ray Train's TorchTrainer.

Small data reaches the workers through the object store (one `ray.put`, each worker slices its
rows): a Ray Data streaming split costs seconds of fixed overhead per dataset, more than the
training itself at this size. Every worker holds the whole validation split and computes the same
validation loss, so early stopping needs no extra collective beyond a broadcast of the decision.

Fault tolerance: a checkpoint (model, optimizer, best weights, early-stopping state) is reported
every `checkpoint_every` epochs and once at the end; a restarted worker group loads
`ray.train.get_checkpoint()` and carries on from that epoch. Shuffling and dropout are seeded
per (seed, epoch, rank), so a resumed run trains exactly as an uninterrupted one would.

Saved safely: the architecture as JSON (model.json, via the params), the weights as a torch
state_dict read back with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import copy
import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from pipeline.models import raytrain
from pipeline.models.base import TrainData, TrainedModel

FAMILIES = ("neural_network", "transformer")
WEIGHTS = "weights.pt"
_TRAINING = {"epochs": 50, "batch_size": 128, "learning_rate": 1e-3, "weight_decay": 1e-4,
             "patience": 8, "checkpoint_every": None}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "neural_network": {"hidden_layers": [64, 32], "dropout": 0.1, **_TRAINING},
    "transformer": {"d_model": 32, "n_heads": 4, "n_layers": 2, "ffn_factor": 2, "dropout": 0.1,
                    **_TRAINING, "epochs": 30, "patience": 5, "weight_decay": 1e-5},
}
_ARCH_KEYS = {"neural_network": ("hidden_layers", "dropout"),
              "transformer": ("d_model", "n_heads", "n_layers", "ffn_factor", "dropout")}


def params_for(family: str, given: dict[str, Any]) -> dict[str, Any]:
    """The family's defaults overlaid with the spec's model_params; unknown keys are an error."""
    defaults = _DEFAULTS[family]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"model_params.{family}: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(defaults))})")
    params = {**copy.deepcopy(defaults), **given}
    if family == "neural_network":
        params["hidden_layers"] = [int(h) for h in params["hidden_layers"]]
        if not params["hidden_layers"] or min(params["hidden_layers"]) < 1:
            raise ValueError(f"model_params.{family}.hidden_layers must be positive layer widths")
    elif params["d_model"] % params["n_heads"]:
        raise ValueError(f"model_params.{family}: d_model {params['d_model']} is not a multiple "
                         f"of n_heads {params['n_heads']}")
    if params["checkpoint_every"] is None:
        params["checkpoint_every"] = max(10, params["epochs"] // 5)
    for key in ("epochs", "batch_size", "patience", "checkpoint_every"):
        if int(params[key]) != params[key] or params[key] < 1:
            raise ValueError(f"model_params.{family}.{key} must be a positive integer")
    if not 0 <= params["dropout"] < 1:
        raise ValueError(f"model_params.{family}.dropout must be in [0, 1)")
    return params


# --------------------------------------------------------------------------- networks

class _Tabular(nn.Module):
    """Standardises inputs (and, for regression, un-standardises outputs) with statistics of the
    training split kept as buffers: they travel in the state_dict with the weights."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_std", torch.ones(n_features))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def fit_scaling(self, X: np.ndarray, y: Optional[np.ndarray]) -> None:
        std = X.std(axis=0) if len(X) else np.ones(X.shape[1])
        self.x_mean.copy_(torch.as_tensor(X.mean(axis=0) if len(X) else 0.0))
        self.x_std.copy_(torch.as_tensor(np.where(std > 1e-12, std, 1.0)))
        if y is not None and len(y):
            self.y_mean.fill_(float(y.mean()))
            self.y_std.fill_(float(y.std()) if y.std() > 1e-12 else 1.0)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std


class MLP(_Tabular):
    def __init__(self, n_features: int, n_outputs: int, hidden_layers: list[int], dropout: float):
        super().__init__(n_features)
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden_layers:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*layers, nn.Linear(width, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.scale(x))


class FTTransformer(_Tabular):
    def __init__(self, n_features: int, n_outputs: int, d_model: int, n_heads: int, n_layers: int,
                 ffn_factor: int, dropout: float):
        super().__init__(n_features)
        bound = 1 / math.sqrt(d_model)
        self.weight = nn.Parameter(torch.empty(n_features, d_model).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d_model).uniform_(-bound, bound))
        self.cls = nn.Parameter(torch.empty(1, 1, d_model).uniform_(-bound, bound))
        block = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=d_model * ffn_factor,
                                           dropout=dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(block, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.ReLU(), nn.Linear(d_model, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.scale(x).unsqueeze(-1) * self.weight + self.bias     # (n, features, d)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens)[:, 0])


def n_outputs(problem_type: str, n_classes: int) -> int:
    return 1 if problem_type == "regression" else max(2, n_classes)


def build_network(family: str, params: dict[str, Any], n_features: int, outputs: int) -> _Tabular:
    arch = {k: params[k] for k in _ARCH_KEYS[family]}
    if family == "neural_network":
        return MLP(n_features, outputs, **arch)
    return FTTransformer(n_features, outputs, **arch)


# --------------------------------------------------------------------------- the model

@contextmanager
def _few_threads(rows: int):
    """Small requests run on one thread: splitting a handful of rows across intra-op threads
    gains nothing, and on a busy machine each parallel op waits for a second core (seen here: a
    single-record transformer call at p50 130 ms with 2 threads under load, 0.4 ms with one)."""
    before = torch.get_num_threads()
    if rows > 256 or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchModel(TrainedModel):
    def __init__(self, family: str, params: dict[str, Any], net: _Tabular):
        super().__init__(params)
        self.family = family
        self.net = net.cpu().eval()

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        chunks = []
        with _few_threads(len(X)), torch.inference_mode():
            for start in range(0, max(len(X), 1), 8192):
                out = self.net(torch.tensor(X[start:start + 8192], dtype=torch.float32))
                if self.params["problem_type"] == "regression":
                    chunks.append((out[:, 0] * self.net.y_std + self.net.y_mean).double().numpy())
                else:
                    chunks.append(torch.softmax(out, dim=1).double().numpy())
        return np.concatenate(chunks)

    def _save_weights(self, directory: Path) -> str:
        torch.save(self.net.state_dict(), directory / WEIGHTS)
        return WEIGHTS

    @classmethod
    def _load_weights(cls, directory: Path, meta: dict) -> "TorchModel":
        params = meta["params"]
        net = build_network(meta["family"], params, params["n_features"], params["n_outputs"])
        state = torch.load(directory / meta["weights"], map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        return cls(meta["family"], params, net)


# --------------------------------------------------------------------------- training loop

@dataclass
class Progress:
    """Early-stopping state; checkpointed as JSON beside the tensors."""
    epoch: int = 0              # epochs completed
    start_epoch: int = 0        # where this attempt began: > 0 when resumed from a checkpoint
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False
    history: list[float] = field(default_factory=list)   # validation loss per epoch

    def metrics(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "start_epoch": self.start_epoch, "best_epoch": self.best_epoch,
                "val_loss": self.history[-1] if self.history else math.nan,
                "best_val_loss": self.best_loss}


@dataclass
class FitState:
    """Everything a resumed run needs: weights, optimizer, the best weights so far, progress."""
    model: dict
    optimizer: dict
    best: dict
    progress: Progress

    def write(self, directory: str | Path) -> None:
        torch.save({"model": self.model, "optimizer": self.optimizer, "best": self.best},
                   Path(directory) / "state.pt")
        (Path(directory) / "progress.json").write_text(json.dumps(asdict(self.progress)))

    @classmethod
    def read(cls, directory: str | Path) -> "FitState":
        tensors = torch.load(Path(directory) / "state.pt", map_location="cpu", weights_only=True)
        progress = Progress(**json.loads((Path(directory) / "progress.json").read_text()))
        return cls(tensors["model"], tensors["optimizer"], tensors["best"], progress)


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _loss_fn(problem_type: str) -> Callable:
    if problem_type == "regression":
        return lambda out, y: nn.functional.mse_loss(out[:, 0], y)
    return nn.functional.cross_entropy


def _tensors(net: _Tabular, X: np.ndarray, y: np.ndarray, problem_type: str, device):
    Xt = torch.tensor(X, dtype=torch.float32, device=device)
    if problem_type == "regression":   # the loss sees the standardised target
        yt = (torch.tensor(y, dtype=torch.float32) - net.y_mean.cpu()) / net.y_std.cpu()
        return Xt, yt.to(device)
    return Xt, torch.tensor(y, dtype=torch.long, device=device)


def _validation_loss(net: nn.Module, X: torch.Tensor, y: torch.Tensor, loss) -> float:
    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(X), 4096):
            out = net(X[start:start + 4096])
            total += float(loss(out, y[start:start + 4096])) * len(out)
    return total / max(1, len(X))


def fit_network(family: str, params: dict[str, Any], X_train: np.ndarray, y_train: np.ndarray,
                X_val: np.ndarray, y_val: np.ndarray, problem_type: str, n_classes: int, seed: int,
                *, rank: int = 0, world: int = 1, device: str | torch.device = "cpu",
                resume: Optional[FitState] = None,
                prepare: Callable[[nn.Module], nn.Module] = lambda m: m,
                agree: Callable[[bool], bool] = lambda stop: stop,
                after_epoch: Callable[[FitState], None] = lambda state: None,
                ) -> tuple[_Tabular, Progress]:
    """Train one network on this worker's share of the rows; returns it with its best weights.

    Plain torch: Ray Train passes `prepare` (DDP), `agree` (rank 0's early-stopping decision) and
    `after_epoch` (checkpoint reports); tests call it directly."""
    # float32 here as in the Ray workers, so both paths fit the same scaling and train alike.
    X_train, X_val = np.asarray(X_train, np.float32), np.asarray(X_val, np.float32)
    torch.manual_seed(seed)
    net = build_network(family, params, X_train.shape[1], n_outputs(problem_type, n_classes))
    net.fit_scaling(X_train, y_train if problem_type == "regression" else None)
    progress = Progress()
    if resume is not None:
        net.load_state_dict(resume.model)
        progress = resume.progress
        progress.start_epoch = progress.epoch
    net.to(device)
    model = prepare(net)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["learning_rate"],
                                  weight_decay=params["weight_decay"])
    best = _cpu_copy(net.state_dict())
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)
        best = resume.best
    loss = _loss_fn(problem_type)
    X, y = _tensors(net, X_train, y_train, problem_type, device)
    Xv, yv = _tensors(net, X_val, y_val, problem_type, device)
    batch = max(1, params["batch_size"] // world)
    usable = len(X) - len(X) % world          # equal shares: every rank takes the same steps
    while progress.epoch < params["epochs"] and not progress.stopped:
        epoch = progress.epoch
        # Seeds per epoch, so a resumed run replays exactly: one shuffle shared by every rank
        # (each takes its slice of it) and dropout masks of its own per rank.
        torch.manual_seed(seed + 7919 * epoch + 104729 * rank)
        order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed + 31 * epoch))
        mine = order[rank:usable:world].to(device)
        model.train()
        for start in range(0, len(mine), batch):
            idx = mine[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss(model(X[idx]), y[idx]).backward()
            optimizer.step()
        val = _validation_loss(net, Xv, yv, loss) if len(Xv) else 0.0
        progress.history.append(val)
        progress.epoch = epoch + 1
        # Without a validation split every epoch counts as the best: no early stopping.
        if (not len(Xv) or progress.best_epoch == 0
                or val < progress.best_loss - 1e-6 * abs(progress.best_loss)):
            progress.best_loss, progress.best_epoch, progress.bad_epochs = val, epoch + 1, 0
            best = _cpu_copy(net.state_dict())
        else:
            progress.bad_epochs += 1
        progress.stopped = agree(progress.bad_epochs >= params["patience"])
        after_epoch(FitState(net.state_dict(), optimizer.state_dict(), best, progress))
    net.load_state_dict(best)
    return net, progress


# --------------------------------------------------------------------------- Ray Train

def _train_loop_per_worker(config: dict) -> None:
    """Runs in each Ray Train worker: the whole arrays from the object store, its share of rows."""
    import ray.train.torch

    torch.set_num_threads(config["threads"])
    rank, world = raytrain.rank_and_world()
    X_train, y_train, X_val, y_val = raytrain.arrays(config)
    # The CUDA path (use_gpu) is written to Ray Train's recipe but untested: no GPU here.
    device = ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")
    every = int(config["params"]["checkpoint_every"])
    with raytrain.restored() as directory:
        resume = FitState.read(directory) if directory is not None else None

    def report(state: FitState, final: bool, **extra) -> None:
        raytrain.report({**state.progress.metrics(), "final": final, **extra}, rank, state.write)

    def after_epoch(state: FitState) -> None:
        p = state.progress
        if p.epoch % every == 0 and p.epoch < config["params"]["epochs"] and not p.stopped:
            report(state, final=False)
        raytrain.crash_if_asked(config, "_test_kill_after_epoch", p.epoch, rank)

    def agree(stop: bool) -> bool:
        if world == 1:
            return stop
        flag = torch.tensor([int(stop)], device=device)
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    net, progress = fit_network(
        config["family"], config["params"], X_train, y_train, X_val, y_val,
        config["problem_type"], config["n_classes"], config["seed"], rank=rank, world=world,
        device=device, resume=resume, prepare=ray.train.torch.prepare_model, agree=agree,
        after_epoch=after_epoch)
    best = _cpu_copy(net.state_dict())
    report(FitState(best, {}, best, progress), final=True, workers=world)


def train_torch(family: str, data: TrainData, given: dict[str, Any],
                test_hooks: Optional[dict[str, Any]] = None) -> TorchModel:
    """One TorchTrainer run. `test_hooks` (tests only) go into train_loop_config, e.g.
    {"_test_kill_after_epoch": 3, "_test_kill_marker": path} to crash a worker once."""
    from ray.train.torch import TorchTrainer

    plan = data.plan
    params = params_for(family, given)
    config = {"family": family, "params": params, "data": raytrain.put_arrays(data),
              "seed": data.seed, "problem_type": data.problem_type, "n_classes": data.n_classes,
              "threads": plan.threads, "use_gpu": plan.use_gpu, **(test_hooks or {})}
    result = raytrain.fit(TorchTrainer, _train_loop_per_worker, config, data, family)
    with result.checkpoint.as_directory() as directory:
        state = FitState.read(directory)
    outputs = n_outputs(data.problem_type, data.n_classes)
    net = build_network(family, params, data.X_train.shape[1], outputs)
    net.load_state_dict(state.best)
    saved = {**params, "n_features": int(data.X_train.shape[1]), "n_outputs": outputs,
             "problem_type": data.problem_type, "n_classes": data.n_classes,
             "epochs_trained": state.progress.epoch, "best_epoch": state.progress.best_epoch}
    model = TorchModel(family, saved, net)
    model.training_report = dict(result.metrics or {})
    return model
