"""Write the small sample data sets the demo and the tests use (deterministic).

The sentences are generated from templates written for tfft, so the project ships no
third-party corpus. Run ``python examples/make_sample_data.py`` to regenerate
``examples/data/``; the committed files are its output with the default seed.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

PEOPLE = ["Anna Schmidt", "John Carter", "Maria Lopez", "Kenji Tanaka", "Olivia Brown", "Pierre Dubois",
          "Fatima Khan", "Lars Nilsson", "Chen Wei", "Grace Okafor", "Tom Hughes", "Elena Petrova"]
PLACES = ["Berlin", "Paris", "Tokyo", "New York", "Lagos", "Madrid", "Stockholm", "Cairo", "Toronto",
          "Buenos Aires", "Sydney", "Mumbai"]
ORGS = ["Acme Corp", "Globex", "the United Nations", "Northwind Bank", "Initech", "Umbrella Health",
        "the World Bank", "Blue Harbor Airlines", "Vertex Labs", "Reuters"]
MISC = ["German", "French", "Japanese", "Olympic", "Nobel", "Brazilian", "Canadian", "World Cup"]

NER_TEMPLATES = [
    "{PER} flew to {LOC} on Monday .",
    "{ORG} hired {PER} as chief executive .",
    "Shares of {ORG} rose 3 percent in {LOC} .",
    "{PER} met {PER} in {LOC} to discuss the {MISC} deal .",
    "The {MISC} team beat {LOC} 2-1 on Sunday .",
    "{PER} , a spokesman for {ORG} , declined to comment .",
    "Police in {LOC} said {PER} was arrested .",
    "{ORG} opened a new office in {LOC} .",
    "The {MISC} government praised {ORG} .",
    "{PER} won the {MISC} prize .",
    "Rain delayed the match between {LOC} and {LOC} .",
    "Analysts at {ORG} expect growth to slow .",
]

POSITIVE = ["wonderful", "moving", "brilliant", "charming", "funny", "beautiful", "gripping", "delightful"]
NEGATIVE = ["boring", "clumsy", "dull", "tedious", "awful", "confusing", "lifeless", "forgettable"]
SUBJECTS = ["the film", "this movie", "the story", "the acting", "the script", "the ending", "the soundtrack",
            "the cast", "the direction", "the dialogue"]
SENTIMENT_TEMPLATES = [
    "{subject} is {adj} .",
    "{subject} was {adj} and {adj} .",
    "i found {subject} {adj} from start to finish .",
    "what a {adj} experience ; {subject} is {adj} .",
    "honestly , {subject} felt {adj} .",
    "even the critics agree {subject} is {adj} .",
]


def _ner_sentence(rng: random.Random):
    template = rng.choice(NER_TEMPLATES)
    tokens, tags = [], []
    for piece in template.split():
        if piece.startswith("{") and piece.endswith("}"):
            kind = piece[1:-1]
            name = rng.choice({"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS, "MISC": MISC}[kind])
            words = name.split()
            if words[0] == "the":  # "the" is not part of the organisation's name
                tokens.append("the")
                tags.append("O")
                words = words[1:]
            for i, word in enumerate(words):
                tokens.append(word)
                tags.append(("B-" if i == 0 else "I-") + kind)
        else:
            tokens.append(piece)
            tags.append("O")
    return tokens, tags


def _sentiment_row(rng: random.Random):
    label = rng.randrange(2)
    words = POSITIVE if label else NEGATIVE
    text = rng.choice(SENTIMENT_TEMPLATES)
    while "{adj}" in text:
        text = text.replace("{adj}", rng.choice(words), 1)
    return text.replace("{subject}", rng.choice(SUBJECTS)), label


def _pair_row(rng: random.Random):
    """Two reviews and whether they share a sentiment: a sentence-pair classification task."""
    (first, first_label), (second, second_label) = _sentiment_row(rng), _sentiment_row(rng)
    return first, second, "same" if first_label == second_label else "opposite"


# Multi-label: the aspects of a film a review talks about (none, one or several).
ASPECTS = {"acting": ["the acting", "the cast"], "story": ["the script", "the story", "the ending"],
           "music": ["the soundtrack", "the score"]}
NO_ASPECT = ["what a night out .", "we went on a rainy sunday .", "i would see it again .", "bring popcorn ."]


def _aspect_row(rng: random.Random):
    """A review and the aspects it mentions (an empty set when it mentions none)."""
    aspects = sorted(rng.sample(sorted(ASPECTS), rng.choice([0, 1, 1, 2, 2, 3])))
    clauses = [f"{rng.choice(ASPECTS[aspect])} was {rng.choice(POSITIVE + NEGATIVE)}" for aspect in aspects]
    rng.shuffle(clauses)
    return (" and ".join(clauses) + " ." if clauses else rng.choice(NO_ASPECT)), ",".join(aspects)


def _rating_row(rng: random.Random):
    """A review and its stars, 1 to 5: one star plus two per positive adjective, plus a half-star of chance."""
    positives = rng.randrange(3)
    adjectives = rng.sample(POSITIVE, positives) + rng.sample(NEGATIVE, 2 - positives)
    rng.shuffle(adjectives)
    stars = min(5.0, 1 + 2 * positives + rng.choice([0.0, 0.5]))
    return f"{rng.choice(SUBJECTS)} was {adjectives[0]} but {adjectives[1]} .", stars


def write_conll(path: Path, sentences) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("-DOCSTART- O\n\n")
        for tokens, tags in sentences:
            handle.writelines(f"{token} {tag}\n" for token, tag in zip(tokens, tags))
            handle.write("\n")


def write_tsv(path: Path, rows, header: str = "sentence\tlabel") -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header + "\n")
        handle.writelines(f"{text}\t{label}\n" for text, label in rows)


def write_pairs_tsv(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("sentence1\tsentence2\tlabel\n")
        handle.writelines(f"{first}\t{second}\t{label}\n" for first, second, label in rows)


def main(out_dir: Path, seed: int = 13) -> None:
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_conll(out_dir / "ner_train.txt", [_ner_sentence(rng) for _ in range(400)])
    write_conll(out_dir / "ner_valid.txt", [_ner_sentence(rng) for _ in range(100)])
    write_tsv(out_dir / "sentiment_train.tsv", [_sentiment_row(rng) for _ in range(400)])
    write_tsv(out_dir / "sentiment_valid.tsv", [_sentiment_row(rng) for _ in range(100)])
    # Text as people write it: the natural word rule splits `Monday.`, `(Reuters)` and `Corp's`
    # into the tokens the CoNLL-style training data has (`Monday` `.`, `(` `Reuters` `)`, `Corp` `'s`).
    (out_dir / "ner_predict.txt").write_text(
        "Anna Schmidt flew to Tokyo on Monday.\n"
        "Shares of Globex Corp. rose in Madrid.\n"
        "LONDON (Reuters) - Acme Corp's chief executive met Kenji Tanaka in Berlin.\n", encoding="utf-8")
    (out_dir / "sentiment_predict.txt").write_text(
        "the acting was brilliant and moving .\nthe script is dull .\n", encoding="utf-8")
    write_pairs_tsv(out_dir / "pairs_train.tsv", [_pair_row(rng) for _ in range(300)])
    write_pairs_tsv(out_dir / "pairs_valid.tsv", [_pair_row(rng) for _ in range(60)])
    (out_dir / "pairs_predict.txt").write_text(
        "the cast is brilliant .\ti found the ending moving .\nthe script is dull .\tthe film was gripping .\n",
        encoding="utf-8")
    write_tsv(out_dir / "aspects_train.tsv", [_aspect_row(rng) for _ in range(300)], "review\taspects")
    write_tsv(out_dir / "aspects_valid.tsv", [_aspect_row(rng) for _ in range(80)], "review\taspects")
    (out_dir / "aspects_predict.txt").write_text(
        "the cast was charming and the soundtrack was dull .\nbring popcorn .\n", encoding="utf-8")
    write_tsv(out_dir / "ratings_train.tsv", [_rating_row(rng) for _ in range(300)], "review\tstars")
    write_tsv(out_dir / "ratings_valid.tsv", [_rating_row(rng) for _ in range(80)], "review\tstars")
    (out_dir / "ratings_predict.txt").write_text(
        "the story was wonderful but gripping .\nthe cast was awful but dull .\n", encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--seed", type=int, default=13)
    arguments = parser.parse_args()
    main(arguments.out_dir, arguments.seed)
