"""NER the Keras way: build a tf.data pipeline, a TF BERT token classifier, and call model.fit.

    python examples/ner_keras.py [--train FILE] [--validation FILE] [--model default|DIR] [--epochs N]

Everything `tfft train` does is available piece by piece; this script shows the pieces. It
prints the validation report, then one JSON line per predicted text (as `tfft predict --words`).
The test suite runs it on a tiny random-init model (tests/test_examples.py).
"""

import argparse
import json
from pathlib import Path

import tfft
from tfft.backend import keras

DATA = Path(__file__).parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", default=str(DATA / "ner_train.txt"))
    parser.add_argument("--validation", default=str(DATA / "ner_valid.txt"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    tokenizer = tfft.load_tokenizer(args.model)
    train = tfft.read_conll(args.train)
    valid = tfft.read_conll(args.validation)
    labels = tfft.LabelMap.from_token_examples(train)

    train_ds = tfft.make_dataset(tfft.encode_for_training(tokenizer, train, labels, max_length=128),
                                 batch_size=16, shuffle=True, seed=0)
    model = tfft.build_model("token-classification", labels, args.model)
    model.compile(optimizer=tfft.create_optimizer(1e-4, total_steps=args.epochs * len(train_ds)),
                  loss=tfft.masked_sparse_categorical_crossentropy)
    model.fit(train_ds, epochs=args.epochs, callbacks=[
        tfft.ValidationMetrics.from_examples(tokenizer, valid, labels),  # must come first
        keras.callbacks.EarlyStopping(monitor="val_f1", mode="max", patience=1, restore_best_weights=True),
    ])
    report = tfft.evaluate_examples(model, tokenizer, valid, labels)
    print(report.text)
    predictor = tfft.Predictor(model, tokenizer, "token-classification", labels)
    # Text as people write it: the natural word rule makes `Monday.` two words, `Monday` and `.`.
    for result in predictor.predict(["Anna Schmidt flew to Tokyo on Monday."]):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
