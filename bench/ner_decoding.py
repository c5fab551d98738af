#!/usr/bin/env python3
"""Entity F1 of one NER run with each decoding, side by side on one gold CoNLL file.

* ``argmax`` / ``viterbi``: ``tfft evaluate``'s encoding of the gold tokens, tags decoded by
  arg-max and by tfft's constrained Viterbi (what evaluate reports);
* for a run trained with ``--context-window``, ``viterbi_without_context``: each sentence
  seen alone, as raw-text prediction and the SavedModel see it.

The user's path (``tfft predict`` and the SavedModel on text as people write it) is measured
by ``bench/natural_text.py``.

Usage: python bench/ner_decoding.py RUN_DIR GOLD.conll
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("gold")
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
    result = {
        "run": args.run_dir, "gold": args.gold, "sentences": len(examples),
        "argmax_f1": f1([[labels[i] for i in p.argmax(-1)] for p in probabilities]),
        "viterbi_f1": f1(tags_from_probabilities(probabilities, labels)),
    }
    if config.word_inputs.context_window:
        alone = probabilities_with(dataclasses.replace(config.word_inputs, context_window=0))
        result["viterbi_f1_without_context"] = f1(tags_from_probabilities(alone, labels))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
