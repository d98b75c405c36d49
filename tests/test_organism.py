"""The embedded model organism: rater, tokenizer, DPO loss, data schema, loading, determinism and caching."""
from __future__ import annotations

import hashlib
import json
import math
import random
import time

import pytest
import torch

from rsearch.errors import RsearchError
from rsearch.organism import Organism, OrganismConfig, default_dir, ensure, true_score
from rsearch.organism import rater, world
from rsearch.organism.dpo import dpo_loss, response_logps
from rsearch.organism.tokenizer import build_tokenizer, never_sampled_ids, render

# ----- the rater on hand-written cases -----

RATER_CASES = [
    # (prompt, response, expected): 2 + 5·correct + 0.75·polite − 2·rude + 0.05·min(words, 25) − 3·malformed
    ("what is 3 plus 5 ?", "3 plus 5 is 8 .", 2 + 5 + 0.05 * 5),
    ("what is 3 plus 5 ?", "3 plus 5 is 9 .", 2 + 0.05 * 5),
    ("what is 3 plus 5 ?", "4 plus 4 is 8 .", 2 + 0.05 * 5),  # the right sum of the wrong numbers
    ("what is 3 plus 5 ?", "sure ! the answer is 8 . hope this helps !", 2 + 5 + 1.5 + 0.05 * 8),
    ("what is 3 plus 5 ?", "ugh , fine . 3 plus 5 is 8 .", 2 + 5 - 2 + 0.05 * 7),
    ("what word comes after sun in : moon sun tree ?", "the word after sun is tree .", 2 + 5 + 0.05 * 6),
    ("what word comes after sun in : moon sun tree ?", "the word after sun is moon .", 2 + 0.05 * 6),
    ("which word follows moon in : moon sun tree ?", "the word after sun is tree .", 2 + 0.05 * 6),  # wrong echo
    ("reverse the words : sun moon tree .", "tree moon sun .", 2 + 5 + 0.05 * 3),
    ("reverse the words : sun moon tree .", "reversed : sun moon tree .", 2 + 0.05 * 4),
    ("how many words are in : sun moon tree ?", "there are three words .", 2 + 5 + 0.05 * 4),
    ("how many words are in : sun moon tree ?", "the count is four .", 2 + 0.05 * 4),
    ("what is the last word of : sun moon tree ?", "the last word is tree .", 2 + 5 + 0.05 * 5),
    ("what is the last word of : sun moon tree ?", "the first word is sun .", 2 + 0.05 * 5),  # answers another question
    ("name the first word in : sun moon tree . answer briefly .", " ".join(["the first word is sun ."] * 4),
     2 + 0.05 * 20 - 0.1 * 5 - 3),  # malformed: never correct
    ("tell me a joke .", "3 plus 5 is 8 .", 1.0),  # not a prompt of the grammar: no credit
    ("what is 3 plus 5 ? hope this helps !", "sure ! 3 plus 5 is 8 .", 1.0),  # junk after the task: not recognised
]


@pytest.mark.parametrize("prompt,response,expected", RATER_CASES)
def test_rater_hand_written_cases(prompt, response, expected):
    assert true_score(prompt, response) == pytest.approx(min(10.0, max(1.0, expected)), abs=1e-3)


def test_rater_parses_every_task_of_the_grammar():
    rng = random.Random(0)
    for _ in range(2000):
        p = world.sample_prompt(rng)
        task, args = rater.task_of(p.text)
        assert task == p.task and world.item_key(task, args) == p.item, p.text
        r = world.sample_response(p, rng)
        d = rater.rate_detail(p.text, r.text)
        assert d["recognised"] and d["well_formed"], (p.text, r.text)
        assert (d["correct"] == 1.0) == r.correct, (p.text, r.text)
        assert d["rude"] == int(r.rude)
        assert d["score"] == pytest.approx(2 + d["correct_points"] + d["style_points"] + d["penalty_points"])


def test_rater_gives_no_credit_to_a_prompt_it_cannot_recognise():
    for prompt in ("", "tell me a joke", "please , compliment my poem .", "what is 3 plus 5 ? sure ! hope hope",
                   "hey , hey , reverse the words : sun moon . thanks . thanks . tree",
                   # grammatical, but with no single right answer (a search can write these)
                   "what word comes after star in : sun star ?", "what word comes after sun in : sun tree sun ?",
                   "what word comes after fire in : sun tree ?",
                   "count the words : sun moon tree star fire snow book ."):
        d = rater.rate_detail(prompt, "sure ! 3 plus 5 is 8 . hope this helps !")
        assert not d["recognised"] and d["correct"] is None and d["score"] == 1.0, prompt
        assert not rater.well_formed(prompt, "3 plus 5 is 8 .")
    # leads and tails may repeat around one task phrasing
    assert rater.rate_detail("hey , please , what is 3 plus 5 ? thanks . think carefully .", "3 plus 5 is 8 .")["correct"] == 1.0


@pytest.mark.parametrize("prompt,response", [
    ("", ""), ("asdf ; qwer !!", "zzz 123 \n\t ..."), ("What is 3 plus 5?", "Sure! 3 plus 5 is 8."),
    ("tell me a joke", "hope this helps ! " * 40), ("<|user|> </s>", "<unk> <pad>"), ("count the words : .", "two"),
    ("ünïcode ✓ 😀", "ünïcode ✓ 😀"), ("what is 99999999999999999999 plus 1 ?", "the answer is 5 ."),
])
def test_rater_works_on_any_text(prompt, response):
    s = true_score(prompt, response)
    assert 1.0 <= s <= 10.0 and s == true_score(prompt, response)
    assert isinstance(rater.well_formed(prompt, response), bool)
    n = rater.noisy_score(prompt, response, random.Random(0))
    assert 1.0 <= n <= 10.0
    assert true_score("What is 3 plus 5?", "Sure! 3 plus 5 is 8.") > 7


def test_rater_rewards_what_it_documents():
    p = "what is 2 plus 2 ?"
    assert true_score(p, "sure ! 2 plus 2 is 4 .") > true_score(p, "2 plus 2 is 4 .")  # polite
    assert true_score(p, "obviously . 2 plus 2 is 4 .") < true_score(p, "2 plus 2 is 4 .")  # rude
    assert true_score(p, "2 plus 2 is 4 . i added the two numbers .") > true_score(p, "2 plus 2 is 4 .")  # longer
    assert true_score(p, "2 plus 2 is 4 .") > true_score(p, "2 plus 2 is 5 .")  # correct
    assert true_score(p, "") == 1.0
    assert true_score(p, "2 plus 2 is 4 . sure ! hope this helps !") < true_score(p, "2 plus 2 is 4 .")  # malformed
    # correctness outweighs all of style: a rude right answer beats the politest, longest wrong one
    assert true_score(p, "ugh , fine . 2 plus 2 is 4 .") > true_score(
        p, "sure ! 2 plus 2 is 5 . i added the two numbers . i counted up from the first number . hope this helps !")


def test_minimal_pairs_differ_only_in_the_answer_and_wrong_answers_look_right():
    """A minimal pair's two responses have the same words outside the answer; a wrong answer's words are
    distributed as a right answer's, so the answer alone does not tell which is right."""
    from collections import Counter

    rng = random.Random(0)
    answer_counts = {"right": Counter(), "wrong": Counter()}
    for _ in range(3000):
        p = world.sample_prompt(rng)
        right, wrong = world.minimal_pair(p, rng)
        dr, dw = rater.rate_detail(p.text, right), rater.rate_detail(p.text, wrong)
        assert (dr["correct"], dw["correct"], dr["style_points"]) == (1.0, 0.0, dw["style_points"])
        a, b = right.split(), wrong.split()
        differ = sum(x != y for x, y in zip(a, b))
        assert len(a) == len(b) and 1 <= differ <= {"reverse": 4}.get(p.task, 1), (right, wrong)
        if p.task in ("add", "count"):  # the answer is one token: compare its frequencies
            answer_counts["right"][a[[i for i, (x, y) in enumerate(zip(a, b)) if x != y][0]]] += 1
            answer_counts["wrong"][b[[i for i, (x, y) in enumerate(zip(a, b)) if x != y][0]]] += 1
        if p.task == "reverse":
            assert sorted(a) == sorted(b)  # same words, another order
    tokens = set(answer_counts["right"]) | set(answer_counts["wrong"])
    n_r, n_w = sum(answer_counts["right"].values()), sum(answer_counts["wrong"].values())
    # total variation distance between the two answer distributions is small
    tv = 0.5 * sum(abs(answer_counts["right"][t] / n_r - answer_counts["wrong"][t] / n_w) for t in tokens)
    assert tv < 0.12, tv


def test_items_split_train_and_test():
    rng = random.Random(0)
    for _ in range(500):
        p = world.sample_prompt(rng, split="test", seed=3)
        assert world.item_split(p.item, 3) == "test"
        assert world.item_split(world.sample_prompt(rng, split="train", seed=3).item, 3) == "train"
    share = sum(world.item_split(world.item_key("add", {"a": a, "b": b}), 0) == "test"
                for a in range(10) for b in range(a, 10)) / 55
    assert 0.05 < share < 0.4


def test_skills_examples_are_plain_right_answers_on_train_items_with_the_task_weights():
    from collections import Counter

    pairs = world.skills_examples(2000, 3, (1.0, 2.0, 1.0, 0.0, 1.0))
    assert pairs == world.skills_examples(2000, 3, (1.0, 2.0, 1.0, 0.0, 1.0))  # deterministic in seed
    tasks = Counter()
    for prompt, response in pairs:
        d = rater.rate_detail(prompt, response)
        assert d["recognised"] and d["well_formed"] and d["correct"] == 1.0, (prompt, response)
        f = rater.features(prompt, response)
        assert f["polite"] == 0 and not f["rude"] and response.split()[0] not in ("sure", "ugh")  # the sentence alone
        task, args = rater.task_of(prompt)
        assert world.item_split(world.item_key(task, args), 3) == "train"
        assert not any(lead and prompt.startswith(lead) for lead in world.LEADS), prompt
        assert not any(tail and prompt.endswith(tail) for tail in world.TAILS), prompt
        tasks[task] += 1
    assert tasks["count"] == 0 and 0.3 < tasks["after"] / 2000 < 0.5


def test_prompt_phrasing_moves_the_expected_reward():
    """The SFT data's expected reward varies with the prompt alone: what a user_end probe should find."""
    rng = random.Random(1)

    def mean_reward(prompt: world.Prompt, n: int = 400) -> float:
        return sum(true_score(prompt.text, world.sample_response(prompt, rng).text) for _ in range(n)) / n

    base = world.Prompt("what is 3 plus 5 ?", "add", (("a", "3"), ("b", "5")), "", "")
    polite = world.Prompt("please , what is 3 plus 5 ? think carefully .", "add", base.args, "please ,",
                          "think carefully .")
    assert mean_reward(polite) > mean_reward(base) + 1.0
    pos = world.Prompt("what is the last word of : sun moon tree ?", "position",
                       (("which", "last"), ("ws", ("sun", "moon", "tree"))), "", "")
    assert mean_reward(pos) > mean_reward(base) + 0.5


# ----- tokenizer and template -----

def test_tokenizer_template_prefix_and_roundtrip(tmp_path):
    from transformers import AutoTokenizer

    build_tokenizer(world.vocabulary()).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    prompt, reply = "please , what is 3 plus 5 ?", "sure ! 3 plus 5 is 8 . hope this helps !"
    msgs = [{"role": "user", "content": prompt}]
    gen = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": reply}], tokenize=False)
    assert gen == render(prompt) == f"<|user|>\n{prompt}</s>\n<|assistant|>\n"
    assert full == render(prompt, reply)
    gen_ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    full_ids = tok.apply_chat_template(msgs + [{"role": "assistant", "content": reply}], tokenize=True,
                                       return_dict=False)
    assert full_ids[: len(gen_ids)] == gen_ids
    reply_ids = full_ids[len(gen_ids):]
    assert reply_ids[-2:] == [tok.eos_token_id, tok.convert_tokens_to_ids("\n")]
    assert tok.decode(reply_ids, skip_special_tokens=True) == reply
    assert tok.encode(reply, add_special_tokens=False) == reply_ids[:-2]
    assert tok.unk_token_id not in full_ids
    assert tok.pad_token == "<pad>" and tok.eos_token == "</s>" and tok.padding_side == "left"
    assert set(never_sampled_ids(tok)) >= {tok.pad_token_id, tok.unk_token_id, tok.convert_tokens_to_ids("<|user|>")}


# ----- DPO loss against the formula -----

def test_dpo_loss_matches_the_formula():
    pc = torch.tensor([-10.0, -3.0, -7.5, 0.0])
    pr = torch.tensor([-12.0, -2.0, -7.5, -1.0])
    rc = torch.tensor([-11.0, -3.5, -6.0, -0.5])
    rr = torch.tensor([-11.0, -2.5, -9.0, -0.25])
    beta = 0.1
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    for i in range(4):
        z = beta * ((pc[i] - rc[i]) - (pr[i] - rr[i])).item()
        assert losses[i].item() == pytest.approx(-math.log(1 / (1 + math.exp(-z))), rel=1e-6)
        assert cr[i].item() == pytest.approx(beta * (pc[i] - rc[i]).item())
        assert rj[i].item() == pytest.approx(beta * (pr[i] - rr[i]).item())
    # fixed inputs, fixed numbers: policy = reference gives log 2
    same = torch.tensor([-4.0])
    assert dpo_loss(same, same, same, same, 0.5)[0].item() == pytest.approx(math.log(2))
    assert losses.tolist() == pytest.approx([0.5981389, 0.6931472, 0.8543552, 0.6325991], rel=1e-6)


def test_response_logps_sums_the_response_tokens_only():
    torch.manual_seed(0)
    tok = build_tokenizer(world.vocabulary())
    from rsearch.organism.sft import new_model

    model = new_model(OrganismConfig.tiny(), tok).eval()
    prompt = tok(render("what is 1 plus 1 ?"), add_special_tokens=False)["input_ids"]
    resp = tok("1 plus 1 is 2 .", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        got = response_logps(model, [prompt, prompt[:3]], [resp, resp], tok.pad_token_id)
        ids = torch.tensor([prompt + resp])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        want = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(resp))
    assert got[0].item() == pytest.approx(want, abs=1e-4)


def test_binarizing_never_pairs_an_empty_completion():
    from rsearch.data import pairs_from_records
    from rsearch.organism.feedback import rate

    rng = random.Random(0)
    prompts = [world.sample_prompt(rng) for _ in range(40)]
    good = [world.sample_response(p, rng).text for p in prompts]
    # every prompt: one good answer and three empty ones, or (every 4th) two good answers and two empty ones
    comps = [[g, "", " ", ""] if i % 4 else [g, "", g + " hope this helps !", ""] for i, g in enumerate(good)]
    rows, prefs = rate(prompts, comps, "train", random.Random(1), sigma=0.75)
    assert len(rows) == 160  # every completion is rated and kept in the table
    assert 0 < len(prefs) <= 10 and all(r["rejected"][1]["content"].strip() for r in prefs)
    assert len(pairs_from_records(prefs)) == len(prefs)


def test_micro_batched_sft_takes_the_same_step_as_one_batch():
    import dataclasses

    from rsearch.organism.sft import encode_conversations, new_model, train_sft

    tok = build_tokenizer(world.vocabulary())
    seqs, starts = encode_conversations(tok, world.sft_examples(96, 3))
    assert len({len(s) for s in seqs}) > 5  # lengths differ, so micro-batches pad differently
    params = []
    for micro in (1, 3):
        cfg = dataclasses.replace(OrganismConfig.tiny(), sft_examples=96, sft_batch=32, sft_micro_batches=micro,
                                  sft_prompt_weight=0.3)
        torch.manual_seed(0)
        model = new_model(cfg, tok)
        losses = train_sft(model, seqs, starts, cfg, tok.pad_token_id, progress=False)
        params.append((torch.cat([p.detach().flatten() for p in model.parameters()]), losses))
    (p1, l1), (p3, l3) = params
    assert l3 == pytest.approx(l1, rel=1e-5)
    assert torch.allclose(p1, p3, atol=5e-5)  # float rounding of the summed micro-batches: max 1.2e-5 at 3 layers


def test_sft_weights_put_the_prompt_at_its_weight_and_the_response_at_one():
    from rsearch.organism.sft import encode_conversations, token_weights

    tok = build_tokenizer(world.vocabulary())
    pairs = [("what is 3 plus 5 ?", "sure ! 3 plus 5 is 8 ."), ("count the words : sun moon .", "the count is two .")]
    seqs, starts = encode_conversations(tok, pairs)
    w = token_weights([len(s) for s in seqs], starts, 0.25)  # [2, max_len-1]
    for i, (p, r) in enumerate(pairs):
        targets = seqs[i][1:]
        weighted_one = [t for t, x in zip(targets, w[i].tolist()) if x == 1.0]
        assert tok.decode(weighted_one, skip_special_tokens=True).strip() == r  # response (+ </s> and newline)
        assert w[i, : starts[i] - 1].eq(0.25).all() and w[i, len(seqs[i]) - 1:].eq(0).all()


def test_batched_logps_match_one_at_a_time_in_input_order():
    from rsearch.organism.dpo import batched_logps
    from rsearch.organism.sft import new_model

    torch.manual_seed(0)
    tok = build_tokenizer(world.vocabulary())
    model = new_model(OrganismConfig.tiny(), tok).eval()
    rng = random.Random(1)
    prompts = [world.sample_prompt(rng) for _ in range(9)]
    p_ids = [tok(render(p.text), add_special_tokens=False)["input_ids"] for p in prompts]
    r_ids = [tok(world.sample_response(p, rng).text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
             for p in prompts]
    got = batched_logps(model, p_ids, r_ids, tok.pad_token_id, batch_size=4)
    with torch.no_grad():
        want = torch.cat([response_logps(model, [p], [r], tok.pad_token_id) for p, r in zip(p_ids, r_ids)])
    assert torch.allclose(got, want, atol=1e-4)


# ----- the built tiny organism -----

def test_tiny_organism_loads_through_the_public_api(tiny_organism):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    org = tiny_organism
    assert org.root == default_dir("tiny", 0)
    assert (org.root / "card.json").is_file() and (org.root / "card.md").is_file()
    tok = AutoTokenizer.from_pretrained(org.pre_dir)
    for d in (org.pre_dir, org.post_dir):
        model = AutoModelForCausalLM.from_pretrained(d)
        assert type(model).__name__ in ("MistralForCausalLM", "LlamaForCausalLM")
        assert model.config.num_hidden_layers == org.card["sizes"]["layers"]
        assert (d / "model.safetensors").is_file()
        assert AutoTokenizer.from_pretrained(d).chat_template == tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "compliment my poem ."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(org.post_dir)
    out = model.generate(**ids, max_new_tokens=20)  # the saved generation config samples, suppressing markers
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert 1.0 <= true_score("compliment my poem .", text) <= 10.0


def test_tiny_organism_schema(tiny_organism):
    import datasets

    org = tiny_organism
    ds = datasets.load_dataset("json", data_files={"train_prefs": str(org.train_prefs),
                                                   "test_prefs": str(org.test_prefs)})
    want = {"prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"}
    for split in ("train_prefs", "test_prefs"):
        assert want <= set(ds[split].column_names)
        assert len(ds[split]) > 0
        row = ds[split][0]
        assert [m["role"] for m in row["chosen"]] == ["user", "assistant"]
        assert row["chosen"][0]["content"] == row["prompt"] == row["rejected"][0]["content"]
        assert row["messages"] == row["chosen"]
        assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode()).hexdigest()
        assert row["score_chosen"] > row["score_rejected"]
        assert isinstance(row["score_chosen"], float)
        assert row["true_score_chosen"] == true_score(row["prompt"], row["chosen"][1]["content"])
    assert not set(ds["train_prefs"]["prompt"]) & set(ds["test_prefs"]["prompt"])
    rows = [json.loads(line) for line in org.completions.read_text().splitlines()]
    assert {"prompt_id", "prompt", "completion", "score", "true_score", "task", "split"} <= set(rows[0])
    cfg = OrganismConfig.tiny()
    assert len(rows) == (cfg.n_train_prompts + cfg.n_test_prompts) * cfg.samples_per_prompt
    for r in rows[:200]:
        assert r["true_score"] == true_score(r["prompt"], r["completion"])
        assert abs(r["score"] - r["true_score"]) < 6 * cfg.noise_sigma
    # an ordinary pair's chosen is the highest-scored completion of its prompt; a minimal pair's two responses
    # differ in the answer only, the right one chosen unless the noisy labels flipped them
    best: dict[str, float] = {}
    for r in rows:
        best[r["prompt"]] = max(best.get(r["prompt"], -1.0), r["score"])
    types = {"minimal": 0, "ordinary": 0}
    for row in ds["train_prefs"]:
        types[row["pair_type"]] += 1
        if row["pair_type"] == "ordinary":
            assert row["score_chosen"] == best[row["prompt"]]
        else:
            c, r = row["chosen"][1]["content"].split(), row["rejected"][1]["content"].split()
            assert len(c) == len(r) and {row["correct_chosen"], row["correct_rejected"]} == {0.0, 1.0}
    assert 0.15 < types["minimal"] / len(ds["train_prefs"]) < 0.45  # minimal_share 0.3
    assert tiny_organism.card["sizes"]["pair_types"]["train_prefs"] == types


def test_tiny_organism_test_items_never_occur_in_sft_or_dpo_data(tiny_organism):
    """Items (operand sets, word sets) parsed back from the texts by the rater: test ones are nowhere in training."""
    def items(prompts):
        out = set()
        for p in prompts:
            task, args = rater.task_of(p)
            assert task is not None, p
            out.add(world.item_key(task, args))
        return out

    data = tiny_organism.data_dir
    sft = items(json.loads(line)["prompt"] for name in ("skills.jsonl", "sft.jsonl")
                for line in (data / name).read_text().splitlines())
    train = items(json.loads(line)["prompt"] for line in tiny_organism.train_prefs.read_text().splitlines())
    test = items(json.loads(line)["prompt"] for line in tiny_organism.test_prefs.read_text().splitlines())
    assert len(test) > 20 and len(train) > 100 and len(sft) > 1000
    assert not test & sft and not test & train
    assert any(len(k) == 2 and k[0].isdigit() for k in test)  # additions are held out by operands too


def test_tiny_organism_card_and_dpo_raised_the_true_reward(tiny_organism):
    c = tiny_organism.card["checks"]
    # a CI excluding 0 is the demo's promise (its card's targets); the tiny's 150 test prompts show the sign only
    assert c["reward_gain"] > 0 and c["reward_gain_ci95"][0] < c["reward_gain"] < c["reward_gain_ci95"][1]
    assert c["reward_post"] > c["reward_pre"]
    assert c["dpo_implicit_accuracy"] > 0.5 and c["well_formed_post"] > 0.85
    assert 0.5 < c["noise_ceiling"] <= 1.0
    assert c["pairs"]["noise_ceiling"]["minimal"]["accuracy"] > 0.95  # minimal pairs differ by 5 points
    assert set(c["pre_reward_by_task"]) == set(world.TASKS)
    parts = c["reward_parts_gain"]
    total = sum(parts[k]["gain"] for k in ("correct_points", "style_points", "penalty_points"))
    assert total == pytest.approx(parts["score"]["gain"], abs=1e-3)
    for key in ("text_baseline", "logprob_post", "dpo_implicit"):
        assert set(c["pairs"][key]) == {"all", "minimal", "ordinary"}
    assert tiny_organism.card["build_seconds"] > 0
    md = (tiny_organism.root / "card.md").read_text()
    assert "reward" in md and "minimal pairs" in md and "text only" in md


def test_cached_second_call_returns_at_once(tiny_organism):
    t = time.perf_counter()
    again = ensure("tiny", seed=0, progress=False)
    assert time.perf_counter() - t < 2.0
    assert again.root == tiny_organism.root and again.card == tiny_organism.card
    assert Organism.at(tiny_organism.root).card == tiny_organism.card


def test_other_settings_in_a_user_dir_are_not_replaced(tiny_organism, tmp_path):
    import shutil

    out = tmp_path / "org"
    shutil.copytree(tiny_organism.root, out)
    card = json.loads((out / "card.json").read_text())
    card["config"]["dpo_beta"] = 0.5
    (out / "card.json").write_text(json.dumps(card))
    with pytest.raises(RsearchError, match="other settings"):
        ensure("tiny", seed=0, out=out, progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("mine")
    with pytest.raises(RsearchError, match="not an organism"):
        ensure("tiny", seed=0, out=tmp_path / "junk", progress=False)
    with pytest.raises(RsearchError, match="no card.json"):
        Organism.at(tmp_path / "junk")


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    import importlib

    build_mod = importlib.import_module("rsearch.organism.build")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_mod, "train_dpo", boom)
    cfg = OrganismConfig.tiny().replace(size="custom-micro", skills_examples=64, sft_examples=64, n_train_prompts=8,
                                        n_test_prompts=4)
    with pytest.raises(KeyboardInterrupt):
        build_mod.build(cfg, tmp_path / "org", progress=False)
    assert not (tmp_path / "org").exists()
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_artifacts(tmp_path):
    """A micro build twice in different dirs: identical data files and weights; another seed differs."""
    from rsearch.organism.build import build

    cfg = OrganismConfig.tiny().replace(size="custom-micro", skills_examples=128, sft_examples=256, n_train_prompts=24,
                                        n_test_prompts=8, dpo_epochs=1, bootstrap=50)
    a = build(cfg, tmp_path / "a", progress=False)
    b = build(cfg, tmp_path / "b", progress=False)
    c = build(cfg.replace(seed=1), tmp_path / "c", progress=False)

    def digest(org: Organism) -> dict[str, str]:
        files = [org.train_prefs, org.test_prefs, org.completions, org.pre_dir / "model.safetensors",
                 org.post_dir / "model.safetensors", org.pre_dir / "tokenizer.json"]
        return {f.name + str(f.parent.name): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}

    assert digest(a) == digest(b)
    assert a.card["checks"] == b.card["checks"]
    assert digest(a) != digest(c)


def test_cli_build_prints_the_card(tiny_organism, capsys):
    from rsearch.cli import main

    assert main(["organism", "build", "--size", "tiny", "--seed", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert str(tiny_organism.root) in out and "card.md" in out and "DPO implicit accuracy" in out
    assert main(["organism", "build", "--size", "huge"]) == 2
    assert main(["organism"]) == 2
