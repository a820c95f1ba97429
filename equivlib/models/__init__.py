"""Model builders and a registry: ``get_model("p4_resnet44", num_classes=10, **config)``.

One implementation per architecture family, parametrised by the group (``None`` = Z2, i.e.
plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.MaxPool2d``), so Z2, P4 and P4M share code.
Group models take ordinary images ``(B, C, H, W)``: their first conv is a lifting conv.
Modules (as torchvision's ``models``): :mod:`~equivlib.models._api` (the registry),
:mod:`~equivlib.models.resnet`, :mod:`~equivlib.models.mnist_cnn`,
:mod:`~equivlib.models.single_layer`; importing this package registers every builder.

Exactness (docs/design.md §2, checked by :func:`equivlib.tracer.trace`):

- pre-activation ResNets (stride-2 3x3 / pad 1 convs and 1x1 stride-2 shortcuts) need an
  **odd** input at every stride-2 stage: ResNet-44 at 33 or 97 (not 32, 96), ResNet-18 at 225
  (not 224);
- the RotMNIST CNN (one 2x2 stride-2 max-pool) needs an **even** input: 28 (not 27, 29).

With coset pooling (the default) an exact group model gives invariant logits; without it the
logits see the orientation axis and are not invariant even at an exact size.
"""

from equivlib.models._api import (
    get_model,
    get_model_builder,
    list_models,
    model_revision,
    register_model,
)
from equivlib.models._parts import GroupSpec, InvariantHead
from equivlib.models.mnist_cnn import RotMNISTCNN, p4_mnist_cnn, z2_mnist_cnn
from equivlib.models.resnet import (
    PreActBlock,
    PreActResNet,
    p4_resnet18,
    p4_resnet20,
    p4_resnet44,
    p4m_resnet18,
    p4m_resnet20,
    p4m_resnet44,
    z2_resnet18,
    z2_resnet20,
    z2_resnet44,
)
from equivlib.models.single_layer import SingleLayerP4, p4_single_layer

__all__ = [
    "GroupSpec",
    "InvariantHead",
    "PreActBlock",
    "PreActResNet",
    "RotMNISTCNN",
    "SingleLayerP4",
    "get_model",
    "get_model_builder",
    "list_models",
    "model_revision",
    "p4_mnist_cnn",
    "p4_resnet18",
    "p4_resnet20",
    "p4_resnet44",
    "p4_single_layer",
    "p4m_resnet18",
    "p4m_resnet20",
    "p4m_resnet44",
    "register_model",
    "z2_mnist_cnn",
    "z2_resnet18",
    "z2_resnet20",
    "z2_resnet44",
]
