"""Autoencoders for unsupervised adversarial examples and UAE data augmentation.

The four architectures of Hsu et al. (AAAI 2022), section "data reconstruction":
a convolutional AE (Adadelta, binary cross-entropy), a dense AE 784-128-784
(RMSprop 0.0025, MSE), a sparse AE (the dense one with L1 activity 1e-7 and a
KL sparsity penalty, rho 0.1, weight 3) and an adversarial AE (Makhzani et al.,
2016: encoder/decoder 1000-1000, 2-d latent code matched to an N(0, I) prior by
a 1000-1000-1 discriminator). Every factory returns a *compiled* model whose
output is the reconstruction in [0, 1] (sigmoid), trained with ``fit(x, x)``.

Example:

>>> import numpy as np, robustkit as rk
>>> ae = rk.models.dense_autoencoder((8, 8, 1), code=16)
>>> ae.output_shape
(None, 8, 8, 1)
"""

import keras
import numpy as np
from keras import ops

from robustkit._validation import check_int, check_non_negative, check_positive


def _shape(input_shape):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"`input_shape` must be (H, W, C); got {input_shape!r}.") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"`input_shape` must be (H, W, C) with positive sizes; got {input_shape!r}."
        )
    return shape


@keras.saving.register_keras_serializable(package="robustkit")
class SparsityRegularizer(keras.regularizers.Regularizer):
    """Activity regulariser ``l1 * sum|a| + weight * sum_j KL(rho || mean_batch a_j)``.

    The activations must lie in (0, 1) (sigmoid code). Paper: l1 1e-7, rho 0.1,
    weight 3.

    >>> import numpy as np
    >>> r = SparsityRegularizer(l1=0.0, rho=0.1, weight=1.0)
    >>> round(float(r(np.full((4, 2), 0.1, "float32"))), 6)   # mean == rho: no penalty
    0.0
    """

    def __init__(self, l1=1e-7, rho=0.1, weight=3.0):
        self.l1 = check_non_negative(l1, "l1")
        self.rho = float(rho)
        if not 0.0 < self.rho < 1.0:
            raise ValueError(f"`rho` must be in (0, 1); got {rho!r}.")
        self.weight = check_non_negative(weight, "weight")

    def __call__(self, a):
        a = ops.cast(a, "float32")
        rho_hat = ops.clip(ops.mean(a, axis=0), 1e-6, 1.0 - 1e-6)
        kl = self.rho * ops.log(self.rho / rho_hat) + (1.0 - self.rho) * ops.log(
            (1.0 - self.rho) / (1.0 - rho_hat)
        )
        return self.l1 * ops.sum(ops.abs(a)) + self.weight * ops.sum(kl)

    def get_config(self):
        return {"l1": self.l1, "rho": self.rho, "weight": self.weight}


def dense_autoencoder(input_shape=(28, 28, 1), code=128, learning_rate=0.0025, name="dense_ae"):
    """Dense AE ``D-code-D`` (784-128-784 on MNIST), ReLU code, sigmoid output;
    compiled with RMSprop(0.0025) and MSE (Hsu et al., AAAI 2022).

    >>> dense_autoencoder((8, 8, 1), code=4).count_params()   # 64*4+4 + 4*64+64
    580
    """
    shape = _shape(input_shape)
    code = check_int(code, "code")
    check_positive(learning_rate, "learning_rate")
    d = int(np.prod(shape))
    inputs = keras.Input(shape)
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(code, activation="relu", name="encoder")(h)
    h = keras.layers.Dense(d, activation="sigmoid", name="decoder")(h)
    outputs = keras.layers.Reshape(shape)(h)
    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate), loss="mse")
    return model


def sparse_autoencoder(
    input_shape=(28, 28, 1),
    code=128,
    l1=1e-7,
    rho=0.1,
    sparsity_weight=3.0,
    learning_rate=0.0025,
    name="sparse_ae",
):
    """Sparse AE: the dense AE with a sigmoid code carrying L1 activity (1e-7) and
    a KL sparsity penalty (target rho 0.1, weight 3); RMSprop(0.0025), MSE.

    >>> sparse_autoencoder((8, 8, 1), code=4).layers[2].activity_regularizer.rho
    0.1
    """
    shape = _shape(input_shape)
    code = check_int(code, "code")
    check_positive(learning_rate, "learning_rate")
    d = int(np.prod(shape))
    inputs = keras.Input(shape)
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(
        code,
        activation="sigmoid",
        name="encoder",
        activity_regularizer=SparsityRegularizer(l1=l1, rho=rho, weight=sparsity_weight),
    )(h)
    h = keras.layers.Dense(d, activation="sigmoid", name="decoder")(h)
    outputs = keras.layers.Reshape(shape)(h)
    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate), loss="mse")
    return model


def conv_autoencoder(
    input_shape=(28, 28, 1), filters=(16, 8), kernel=5, learning_rate=1.0, name="conv_ae"
):
    """Convolutional AE: conv16 5x5, max-pool, conv8 5x5, max-pool, then the mirror
    with up-sampling and a sigmoid output; Adadelta (learning rate 1.0, the Keras 2
    default the paper's code used) and binary cross-entropy. The first layer,
    ``conv1``, gives per-sample MINE its 16 feature maps.

    >>> conv_autoencoder((8, 8, 1)).output_shape
    (None, 8, 8, 1)
    """
    shape = _shape(input_shape)
    if shape[0] % 4 or shape[1] % 4:
        raise ValueError(f"`input_shape` height and width must be multiples of 4; got {shape}.")
    f1, f2 = (check_int(f, "filters") for f in filters)
    kernel = check_int(kernel, "kernel")
    check_positive(learning_rate, "learning_rate")
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(f1, kernel, activation="relu", padding="same", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, padding="same")(h)
    h = keras.layers.Conv2D(f2, kernel, activation="relu", padding="same", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, padding="same", name="code")(h)
    h = keras.layers.Conv2D(f2, kernel, activation="relu", padding="same", name="deconv2")(h)
    h = keras.layers.UpSampling2D(2)(h)
    h = keras.layers.Conv2D(f1, kernel, activation="relu", padding="same", name="deconv1")(h)
    h = keras.layers.UpSampling2D(2)(h)
    outputs = keras.layers.Conv2D(
        shape[-1], kernel, activation="sigmoid", padding="same", name="reconstruction"
    )(h)
    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer=keras.optimizers.Adadelta(learning_rate), loss="binary_crossentropy")
    return model


@keras.saving.register_keras_serializable(package="robustkit")
class AdversarialAutoencoder(keras.Model):
    """Adversarial autoencoder (Makhzani et al., 2016) as used by Hsu et al. (2022).

    Encoder ``D-hidden-hidden-latent``, decoder ``latent-hidden-hidden-D`` (sigmoid),
    discriminator ``latent-disc-disc-1`` on codes; the prior is N(0, I). Each
    ``train_step`` does (1) a reconstruction step (MSE) on encoder + decoder, (2) a
    discriminator step (prior samples real, codes fake) and (3) a regularisation
    step that trains the encoder to fool the discriminator. ``model(x)`` is the
    reconstruction. Logged metrics: ``loss`` (reconstruction), ``d_loss``, ``g_loss``.

    Example:

    >>> import numpy as np
    >>> aae = AdversarialAutoencoder((8, 8, 1), hidden=16, latent=2, disc_hidden=16)
    >>> aae.compile()
    >>> aae(np.zeros((1, 8, 8, 1), "float32")).shape
    TensorShape([1, 8, 8, 1])
    """

    def __init__(
        self,
        input_shape=(28, 28, 1),
        hidden=1000,
        latent=2,
        disc_hidden=1000,
        learning_rate=2e-4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = _shape(input_shape)
        self.hidden = check_int(hidden, "hidden")
        self.latent = check_int(latent, "latent")
        self.disc_hidden = check_int(disc_hidden, "disc_hidden")
        self.learning_rate = check_positive(learning_rate, "learning_rate")
        d = int(np.prod(self.image_shape))
        self.encoder = keras.Sequential(
            [
                keras.Input(self.image_shape),
                keras.layers.Flatten(),
                keras.layers.Dense(self.hidden, activation="relu"),
                keras.layers.Dense(self.hidden, activation="relu"),
                keras.layers.Dense(self.latent),
            ],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [
                keras.Input((self.latent,)),
                keras.layers.Dense(self.hidden, activation="relu"),
                keras.layers.Dense(self.hidden, activation="relu"),
                keras.layers.Dense(d, activation="sigmoid"),
                keras.layers.Reshape(self.image_shape),
            ],
            name="decoder",
        )
        self.discriminator = keras.Sequential(
            [
                keras.Input((self.latent,)),
                keras.layers.Dense(self.disc_hidden, activation="relu"),
                keras.layers.Dense(self.disc_hidden, activation="relu"),
                keras.layers.Dense(1),
            ],
            name="discriminator",
        )
        self.d_optimizer = keras.optimizers.Adam(self.learning_rate, beta_1=0.5)
        self.g_optimizer = keras.optimizers.Adam(self.learning_rate, beta_1=0.5)
        self._d_tracker = keras.metrics.Mean(name="d_loss")
        self._g_tracker = keras.metrics.Mean(name="g_loss")
        self._r_tracker = keras.metrics.Mean(name="loss")
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.encoder.trainable_variables)
        self.built = True

    def call(self, x, training=False):
        return self.decoder(self.encoder(x, training=training), training=training)

    def compile(self, optimizer=None, **kwargs):
        """Compiles with ``optimizer`` for reconstruction (default Adam(lr, beta_1=0.5))."""
        if optimizer is None:
            optimizer = keras.optimizers.Adam(self.learning_rate, beta_1=0.5)
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.encoder.trainable_variables + self.decoder.trainable_variables)

    def get_compile_config(self):
        return {"learning_rate": self.learning_rate}

    def compile_from_config(self, config):
        self.compile()

    @property
    def metrics(self):
        return [self._r_tracker, self._d_tracker, self._g_tracker]

    def train_step(self, data):
        import tensorflow as tf

        x = data[0] if isinstance(data, (tuple, list)) else data
        x = tf.cast(x, tf.float32)
        ae_vars = self.encoder.trainable_variables + self.decoder.trainable_variables
        with tf.GradientTape() as tape:
            recon = self.decoder(self.encoder(x, training=True), training=True)
            r_loss = tf.reduce_mean(tf.square(x - recon))
        self.optimizer.apply(tape.gradient(r_loss, ae_vars), ae_vars)

        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        z_fake = self.encoder(x, training=True)
        z_real = tf.random.normal(tf.shape(z_fake))
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            real = self.discriminator(z_real, training=True)
            fake = self.discriminator(z_fake, training=True)
            d_loss = bce(tf.ones_like(real), real) + bce(tf.zeros_like(fake), fake)
        self.d_optimizer.apply(tape.gradient(d_loss, d_vars), d_vars)

        e_vars = self.encoder.trainable_variables
        with tf.GradientTape() as tape:
            fake = self.discriminator(self.encoder(x, training=True), training=True)
            g_loss = bce(tf.ones_like(fake), fake)
        self.g_optimizer.apply(tape.gradient(g_loss, e_vars), e_vars)

        self._r_tracker.update_state(r_loss)
        self._d_tracker.update_state(d_loss)
        self._g_tracker.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        import tensorflow as tf

        x = data[0] if isinstance(data, (tuple, list)) else data
        recon = self(x, training=False)
        self._r_tracker.update_state(tf.reduce_mean(tf.square(tf.cast(x, tf.float32) - recon)))
        return {"loss": self._r_tracker.result()}

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=self.image_shape,
            hidden=self.hidden,
            latent=self.latent,
            disc_hidden=self.disc_hidden,
            learning_rate=self.learning_rate,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["input_shape"] = tuple(config["input_shape"])
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        return cls(**config)


def adversarial_autoencoder(
    input_shape=(28, 28, 1),
    hidden=1000,
    latent=2,
    disc_hidden=1000,
    learning_rate=2e-4,
    name="adversarial_ae",
):
    """A compiled :class:`AdversarialAutoencoder` (encoder/decoder ``hidden``-``hidden``,
    2-d latent, discriminator ``disc_hidden``-``disc_hidden``-1, N(0, I) prior).

    >>> adversarial_autoencoder((8, 8, 1), hidden=8, disc_hidden=8).latent
    2
    """
    model = AdversarialAutoencoder(
        input_shape,
        hidden=hidden,
        latent=latent,
        disc_hidden=disc_hidden,
        learning_rate=learning_rate,
        name=name,
    )
    model.compile()
    return model


AUTOENCODERS = {
    "dense": dense_autoencoder,
    "sparse": sparse_autoencoder,
    "conv": conv_autoencoder,
    "adversarial": adversarial_autoencoder,
}
