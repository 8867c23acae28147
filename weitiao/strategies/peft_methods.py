"""Parameter-efficient methods through `peft`: LoRA, DoRA, IA3, prefix, prompt and P-tuning, LN tuning.

weitiao only turns the config into a peft config; peft does the work, and the adapters it
saves load in any peft-aware tool. The task head always trains and is saved with the adapter
(`modules_to_save`): a LoRA classifier that loses its head on save is a classic bug.

LoRA: Hu et al. 2021, https://arxiv.org/abs/2106.09685; DoRA: Liu et al. 2024,
https://arxiv.org/abs/2402.09353; rsLoRA: Kalajdzievski 2023, https://arxiv.org/abs/2312.03732;
IA3: Liu et al. 2022, https://arxiv.org/abs/2205.05638; prefix tuning: Li & Liang 2021;
prompt tuning: Lester et al. 2021; P-tuning: Liu et al. 2021; LN tuning: Zhao et al. 2023.
"""

from __future__ import annotations

from weitiao.errors import UserError
from weitiao.models.layers import find_parts
from weitiao.strategies import Selection, register

LORA_OPTIONS = ("r", "alpha", "lora_dropout", "rslora", "target_modules")
PROMPT_OPTIONS = ("num_virtual_tokens",)
# Methods that add virtual tokens: nothing to merge into the weights.
PROMPT_LEARNING = ("prefix", "prompt", "ptuning")


def head_modules(model) -> list[str]:
    """Module names of the task head for peft's modules_to_save (e.g. ['bert.pooler.dense', 'classifier']).

    The modules that hold the head's weights, not their containers: peft's IA3 merge copies
    `.weight` from every saved module, which BERT's pooler (a container) lacks (peft 0.21).
    """
    head = tuple(find_parts(model).head)
    return sorted({name.rpartition(".")[0] for name, _ in model.named_parameters() if name.startswith(head)})


def norm_modules(model) -> list[str]:
    """Names of the normalization modules (LayerNorm, RMSNorm), for LN tuning's default targets."""
    return sorted({name.split(".")[-1] for name, m in model.named_modules() if "Norm" in type(m).__name__ and name})


def peft_config(method: str, spec, model, task_type: str = "SEQ_CLS"):
    import peft

    common = {"task_type": task_type}
    # Classifier heads are new: they train and are saved with the adapter.
    # (FEATURE_EXTRACTION: weitiao's multi-task model, a head per task.)
    save = head_modules(model) if task_type in ("SEQ_CLS", "TOKEN_CLS", "FEATURE_EXTRACTION") else None
    targets = spec.target_modules
    if method in ("lora", "dora"):
        return peft.LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.lora_dropout, use_rslora=spec.rslora,
                               use_dora=method == "dora", target_modules=targets, modules_to_save=save, **common)
    if method == "ia3":
        return peft.IA3Config(target_modules=targets, modules_to_save=save, **common)
    if method == "ln_tuning":
        return peft.LNTuningConfig(target_modules=targets or norm_modules(model), modules_to_save=save, **common)
    if method == "prefix":
        return peft.PrefixTuningConfig(num_virtual_tokens=spec.num_virtual_tokens, modules_to_save=save, **common)
    if method == "prompt":
        return peft.PromptTuningConfig(num_virtual_tokens=spec.num_virtual_tokens, modules_to_save=save, **common)
    if method == "ptuning":
        return peft.PromptEncoderConfig(num_virtual_tokens=spec.num_virtual_tokens, modules_to_save=save, **common)
    raise AssertionError(method)


def wrap(method: str, model, spec, task_type: str = "SEQ_CLS") -> Selection:
    import peft

    if task_type == "FEATURE_EXTRACTION" and method in PROMPT_LEARNING:
        raise UserError("strategy.method", f"'{method}' adds virtual tokens per model, and a multi-task run has a model per task",
                        "use lora, dora, ia3 or adapter (they change the shared encoder's weights)")
    if task_type == "TOKEN_CLS" and method in ("prompt", "ptuning"):
        raise UserError("strategy.method", f"'{method}' puts virtual tokens in front of the words, and a token classifier would tag them too",
                        "use prefix (its virtual tokens are keys and values only), lora, dora, ia3 or adapter")

    try:
        wrapped = peft.get_peft_model(model, peft_config(method, spec, model, task_type))
    except ValueError as e:  # peft's messages for unknown target modules are good: pass them on
        raise UserError("strategy.target_modules", f"{method}: {str(e).splitlines()[0]}",
                        "set strategy.target_modules to module names of this model, or 'all-linear'") from None
    return Selection(wrapped, peft=True)


def _register(method: str, options: tuple[str, ...]) -> None:
    register(method, options, peft=True)(lambda model, spec, task_type="SEQ_CLS": wrap(method, model, spec, task_type))


for _name, _options in (("lora", LORA_OPTIONS), ("dora", LORA_OPTIONS), ("ia3", ("target_modules",)),
                        ("ln_tuning", ("target_modules",)), ("prefix", PROMPT_OPTIONS), ("prompt", PROMPT_OPTIONS),
                        ("ptuning", PROMPT_OPTIONS)):
    _register(_name, _options)
