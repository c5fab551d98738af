"""Sentiment classification the Keras way, with model.fit and model.evaluate.

    python examples/sentiment_keras.py [--train FILE.tsv] [--validation FILE.tsv] [--model default|DIR] [--epochs N]

Prints the validation metrics as one JSON line, then one JSON line per predicted text (as
`tfft predict`). The test suite runs it on a tiny random-init model (tests/test_examples.py).
"""

import argparse
import json
from pathlib import Path

import tfft
from tfft.backend import keras

DATA = Path(__file__).parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", default=str(DATA / "sentiment_train.tsv"))
    parser.add_argument("--validation", default=str(DATA / "sentiment_valid.tsv"))
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--model", default="default")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    tokenizer = tfft.load_tokenizer(args.model)
    train = tfft.read_table(args.train, text_column=args.text_column)
    valid = tfft.read_table(args.validation, text_column=args.text_column)
    labels = tfft.LabelMap.from_text_examples(train)

    def dataset(examples, shuffle):
        encoding = tfft.encode_for_training(tokenizer, examples, labels, max_length=128)
        return tfft.make_dataset(encoding, batch_size=32, shuffle=shuffle, seed=0)

    train_ds, valid_ds = dataset(train, True), dataset(valid, False)
    model = tfft.build_model("sequence-classification", labels, args.model)
    model.compile(optimizer=tfft.create_optimizer(1e-4, total_steps=args.epochs * len(train_ds)),
                  loss=tfft.masked_sparse_categorical_crossentropy,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.fit(train_ds, validation_data=valid_ds, epochs=args.epochs, callbacks=[
        tfft.ValidationMetrics.from_examples(tokenizer, valid, labels),  # adds val_macro_f1
        keras.callbacks.EarlyStopping(monitor="val_macro_f1", mode="max", patience=1, restore_best_weights=True),
    ])
    print(json.dumps(model.evaluate(valid_ds, verbose=0, return_dict=True)))
    predictor = tfft.Predictor(model, tokenizer, "sequence-classification", labels)
    for result in predictor.predict(["the acting was brilliant.", "a dull, lifeless script."]):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
