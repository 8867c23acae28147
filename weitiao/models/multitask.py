"""The multi-task model: each task's own transformers model (a sequence classifier, a token
classifier) with one encoder shared between them.

`encoder` is registered first, so parameters are named `encoder.*` once (torch lists a shared
parameter under its first name) and each head `models.TASK.*`. Saved as a folder: config.json
(the encoder's config, the run's flat label names and, under `weitiao_multitask`, each task's
model class and config) and model.safetensors (the encoder once, then each head).
`export_task` writes one task's model alone: a plain transformers folder (encoder + its head).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import torch
from torch import nn

from weitiao.errors import UserError


class Tagged(NamedTuple):
    """A multi-task model's logits, with the task whose head made them."""

    task: str
    logits: torch.Tensor


KEY = "weitiao_multitask"


class MultiTaskModel(nn.Module):
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True

    def __init__(self, encoder: nn.Module, models: dict[str, nn.Module], config):
        super().__init__()
        self.encoder = encoder
        self.models = nn.ModuleDict(models)
        self.config = config
        self.weitiao_parts = self._parts()

    @classmethod
    def sharing(cls, models: dict[str, nn.Module], types: dict[str, str], label_names: list[str]) -> "MultiTaskModel":
        """One model from each task's own: their base models replaced by one of them (the largest: the one
        with a pooler, where a sequence classifier reads one)."""
        first = max(models.values(), key=lambda m: sum(p.numel() for p in _base(m).parameters()))
        encoder = _base(first)
        for m in models.values():
            setattr(m, m.base_model_prefix, encoder)
        config = type(first.config).from_dict(first.config.to_dict())
        config.id2label = dict(enumerate(label_names))
        config.label2id = {n: i for i, n in enumerate(label_names)}
        setattr(config, KEY, {name: {"task": types[name], "class": type(m).__name__, "config": m.config.to_dict()} for name, m in models.items()})
        return cls(encoder, models, config)

    def _parts(self) -> dict:
        """Embeddings and heads for the layer-wise strategies; each task's head its own LR group."""
        from weitiao.models.layers import find_parts

        head, groups, embeddings = [], {}, []
        for name, m in self.models.items():
            base = m.base_model_prefix + "."
            parts = find_parts(m)
            for p in parts.head:
                shared = p.startswith(base)
                q = "encoder." + p[len(base):] if shared else f"models.{name}.{p}"
                groups[q] = "head (shared)" if shared else f"head {name}"
                head.append(q)
            embeddings = ["encoder." + p[len(base):] for p in parts.embeddings if p.startswith(base)]
        return {"embeddings": embeddings, "head": sorted(set(head)), "head_groups": groups}

    def renamed(self, new: dict[str, set[str]]) -> set[str]:
        """Each task model's names of its newly initialised parameters, as this model names them."""
        out = set()
        for name, names in new.items():
            base = self.models[name].base_model_prefix + "."
            out |= {"encoder." + n[len(base):] if n.startswith(base) else f"models.{name}.{n}" for n in names}
        return out

    def keep_heads(self, earlier: "MultiTaskModel") -> set[str]:
        """Copy the heads of `earlier`'s tasks that this model has too (same name, type and labels)."""
        mine, theirs = getattr(self.config, KEY), getattr(earlier.config, KEY)
        kept = set()
        for name, spec in mine.items():
            old = theirs.get(name)
            if old and old["task"] == spec["task"] and old["config"].get("id2label") == spec["config"].get("id2label"):
                state = {k: v for k, v in earlier.models[name].state_dict().items() if not k.startswith(earlier.models[name].base_model_prefix + ".")}
                self.models[name].load_state_dict(state, strict=False)
                kept.add(name)
        return kept

    def forward(self, task: str, **inputs):
        return SimpleNamespace(logits=Tagged(task, self.models[task](**inputs).logits))

    def _shared(self, key: str) -> bool:
        """A state-dict key that is the encoder again under a task model's name."""
        parts = key.split(".", 2)
        return parts[0] == "models" and len(parts) == 3 and parts[1] in self.models \
            and parts[2].startswith(self.models[parts[1]].base_model_prefix + ".")

    def state_dict(self, *args, **kwargs):
        prefix = kwargs.get("prefix", "")
        full = super().state_dict(*args, **kwargs)
        return type(full)((k, v) for k, v in full.items() if not self._shared(k[len(prefix):]))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not self._shared(k)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"multi-task weights do not fit: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        return result

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        for m in self.models.values():
            m.gradient_checkpointing_enable(**kwargs)

    def save_pretrained(self, folder, **_) -> None:
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(folder)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(Path(folder) / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder) -> "MultiTaskModel":
        import transformers
        from safetensors.torch import load_file

        config = transformers.AutoConfig.from_pretrained(str(folder))
        specs = getattr(config, KEY)
        models = {}
        for name, spec in specs.items():
            sub = dict(spec["config"])
            sub_config = transformers.AutoConfig.for_model(sub.pop("model_type"), **sub)
            models[name] = _head_class(spec.get("class"), folder)(sub_config)
        model = cls.sharing(models, {n: s["task"] for n, s in specs.items()}, [config.id2label[i] for i in range(config.num_labels)])
        adapter = getattr(config, "weitiao_adapter", None)
        if adapter:  # trained with bottleneck adapters: the same modules in the shared encoder
            from weitiao.models.adapters import insert_adapters

            insert_adapters(model, adapter["size"], adapter["type"])
            model.config.weitiao_adapter = adapter
        model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))
        return model.eval()

    def export_task(self, name: str, out: Path, tokenizer) -> None:
        """One task's model alone: encoder and its head as a transformers folder (AutoModelFor... loads it)."""
        m = self.models[name]
        adapter = getattr(self.config, "weitiao_adapter", None)
        m.config.weitiao_adapter = adapter  # transformers' loader alone cannot place bottleneck adapters: weitiao's can (tasks/text.load_saved)
        with torch.device("meta"):
            fresh = type(m)(m.config)
            if adapter:
                from weitiao.models.adapters import insert_adapters

                insert_adapters(fresh, adapter["size"], adapter["type"])
            keys = set(fresh.state_dict())  # a token classifier has no pooler: the shared one is left out
        m.save_pretrained(out, state_dict={k: v for k, v in m.state_dict().items() if k in keys})
        tokenizer.save_pretrained(out)
        (Path(out) / "weitiao_task.json").write_text(json.dumps({"task": getattr(self.config, KEY)[name]["task"], "from": name}))


def is_multitask_folder(folder) -> bool:
    path = Path(folder) / "config.json"
    return path.is_file() and KEY in json.loads(path.read_text())


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


HEADS = ("ForSequenceClassification", "ForTokenClassification")  # what a multi-task run's heads are


def _head_class(name, folder):
    """The transformers class a saved multi-task head names, only if it is a sequence or token classifier:
    a handed config.json could otherwise name any callable of transformers."""
    import transformers

    found = getattr(transformers, name, None) if isinstance(name, str) and name.endswith(HEADS) else None
    if not (isinstance(found, type) and issubclass(found, transformers.PreTrainedModel)):
        raise UserError("run_dir", f"'{folder}/config.json' names the multi-task head class {str(name)[:80]!r}, not a transformers "
                        "sequence or token classifier", "the folder is damaged or was not written by weitiao: train the run again")
    return found
