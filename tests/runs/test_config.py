"""RunConfig's derived numbers."""

from ntaylor_lib.runs.config import RunConfig


def test_rounds_per_epoch_counts_full_minibatches_of_the_images_used():
    whole = RunConfig("autoencoder", "sgd", 0.1, epochs=1, batch_size=64, train_size=0, eval_size=10, probe_size=1)
    assert whole.rounds_per_epoch == 60_000 // 64  # train_size 0: the whole training set, not zero rounds
    part = RunConfig("convnet", "sgd", 0.1, epochs=1, batch_size=100, train_size=1050, eval_size=10, probe_size=1,
                     width=4, dataset="cifar10")
    assert part.rounds_per_epoch == 10
