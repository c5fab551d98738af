#!/usr/bin/env python3
"""Entity F1 of one NER run through each path a user has, side by side on one gold CoNLL file.

* ``argmax`` / ``viterbi``: ``tfft evaluate``'s encoding of the gold tokens, tags decoded by
  arg-max and by tfft's constrained Viterbi (what evaluate reports);
* ``raw_text``: ``Predictor.predict`` (what ``tfft predict`` runs) on each sentence's tokens
  joined by spaces, its entity character spans mapped back onto the tokens;
* ``saved_model`` (with ``--saved-model DIR``): the same raw text through the export's
  ``serving_default`` (``SavedModelPredictor``);
* for a run trained with ``--context-window``, ``viterbi_without_context``: each sentence
  seen alone, as raw-text prediction and the SavedModel see it.

``*_same_spans`` is the fraction of sentences whose entity spans equal evaluate's exactly.

Usage: python bench/ner_decoding.py RUN_DIR GOLD.conll [--saved-model DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from tfft.features import encode_for_inference
from tfft.inference import predict_encoded
from tfft.metrics import entity_scores, tags_from_probabilities
from tfft.prediction import Predictor
from tfft.run_dir import load_run_config, read_config_examples


def spans_to_tags(prediction: dict, tokens: list) -> list:
    """IOB2 tags of the tokens from entity character spans over the tokens joined by spaces."""
    starts, ends, position = {}, {}, 0
    for index, token in enumerate(tokens):
        starts[position], ends[position + len(token)] = index, index
        position += len(token) + 1
    tags = ["O"] * len(tokens)
    for entity in prediction["entities"]:
        first, last = starts[entity["start"]], ends[entity["end"]]
        tags[first:last + 1] = [f"B-{entity['type']}"] + [f"I-{entity['type']}"] * (last - first)
    return tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("gold")
    parser.add_argument("--saved-model", metavar="DIR", help="an export of the run (saved_models/NAME/VERSION)")
    args = parser.parse_args()
    config = load_run_config(args.run_dir)
    predictor = Predictor.from_run_dir(args.run_dir)
    examples = read_config_examples(config, args.gold)
    labels = predictor.label_map.labels
    gold = [list(e.tags) for e in examples]

    def probabilities_with(word_inputs):
        encoding = encode_for_inference(predictor.tokenizer, examples, predictor.window_length, predictor.stride,
                                        word_inputs=word_inputs)
        return predict_encoded(predictor.model, encoding, words_per_example=[len(e.tokens) for e in examples])

    def f1(tags):
        return round(entity_scores(gold, tags)["f1"], 4)

    probabilities = probabilities_with(config.word_inputs)
    evaluated = tags_from_probabilities(probabilities, labels)
    result = {
        "run": args.run_dir, "gold": args.gold, "sentences": len(examples),
        "argmax_f1": f1([[labels[i] for i in p.argmax(-1)] for p in probabilities]),
        "viterbi_f1": f1(evaluated),
    }
    if config.word_inputs.context_window:
        alone = probabilities_with(dataclasses.replace(config.word_inputs, context_window=0))
        evaluated = tags_from_probabilities(alone, labels)  # what raw text is compared with
        result["viterbi_f1_without_context"] = f1(evaluated)
    paths = {"raw_text": predictor}
    if args.saved_model:
        from tfft.export.predictor import SavedModelPredictor

        paths["saved_model"] = SavedModelPredictor(args.saved_model)
    texts = [" ".join(e.tokens) for e in examples]
    for name, path in paths.items():
        tags = [spans_to_tags(p, e.tokens) for p, e in zip(path.predict(texts), examples)]
        result[f"{name}_f1"] = f1(tags)
        result[f"{name}_same_spans"] = round(sum(t == e for t, e in zip(tags, evaluated)) / len(examples), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
