"""Architectures: LeNet (MNIST, digits), ResNet-110 (Cifar-10, SVHN), ResNet-50 (ImageNet).

LeNet and ResNet-110 have the `state_dict` keys and shapes of the public MACER code (docs/METHOD.md,
"Hyper-parameters"), so the authors' released checkpoints load with `strict=True`; ResNet-110's keys are
also those of Cohen's and Salman's `cifar_resnet110`. An optional input layer in front serves
their checkpoints: Cohen's `NormalizeLayer` ((x - mean) / std) or Salman's `InputCenterLayer`
(x - mean), with the data set's channel statistics; MACER models have none.

References: K. He et al., Deep residual learning for image recognition (CVPR 2016) and Identity
mappings in deep residual networks (ECCV 2016).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ('lenet', 'resnet110', 'resnet50')
DEFAULT_ARCH = {'digits': 'lenet', 'mnist': 'lenet', 'fashion_mnist': 'lenet', 'cifar10': 'resnet110',
                'svhn': 'resnet110', 'imagenet': 'resnet50'}
# the input each architecture is built for (channels, height, width)
ARCH_INPUT = {'lenet': (1, 28, 28), 'resnet110': (3, 32, 32), 'resnet50': (3, 224, 224)}

# what may stand in front of the network: nothing (MACER), Cohen's normalisation or Salman's centring
INPUT_LAYERS = ('none', 'normalize', 'center')

# Cohen et al.'s channel statistics (locuslab/smoothing, datasets.py), used inside their models (Salman
# et al.'s centring layer subtracts the same means)
NORMALIZATION = {
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class NormalizeLayer(nn.Module):
    """(x - mean) / std per channel, as the model's first layer, so noise is added before it.

    mean and std are non-persistent buffers: they follow `.to(device)` but are not in the
    `state_dict`, exactly as Cohen's layer (which kept them as plain attributes), so a model built
    as `Sequential(NormalizeLayer, net)` has Cohen's keys `1.*`.
    """

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


class InputCenterLayer(nn.Module):
    """x - mean per channel, no division: the first layer of most of Salman et al.'s released models.

    Like `NormalizeLayer`, it has no parameters in the `state_dict`, so nothing in a checkpoint says
    which of the two a model was trained behind (`--input_layer` does).
    """

    def __init__(self, mean):
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return x - self.mean


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class ResNetCifar(nn.Module):
    """The Cifar ResNet of He et al.: 3 stages of BasicBlocks at widths 16/32/64 on 32x32 inputs."""

    def __init__(self, block, layers, num_classes=10):
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 16, layers[0])
        self.layer2 = self._make_layer(block, 32, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 64, layers[2], stride=2)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Linear(64 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He initialisation over fan-out, as the MACER and Cohen code (docs/METHOD.md, "Hyper-parameters")
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x).flatten(1)
        return self.fc(x)


def resnet110(num_classes=10):
    """ResNet-110 for Cifar-10 and SVHN: BasicBlocks [18, 18, 18]."""
    return ResNetCifar(BasicBlock, [18, 18, 18], num_classes=num_classes)


class LeNet(nn.Module):
    """LeNet for 28x28 single-channel images (MNIST, digits), as the public MACER code."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def resnet50(num_classes=1000):
    """torchvision's ResNet-50 (random weights), as Cohen's and Salman's ImageNet models."""
    import torchvision
    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


_BUILDERS = {'lenet': LeNet, 'resnet110': resnet110, 'resnet50': resnet50}


def build_model(arch, num_classes=10, input_layer='none', stats=None):
    """The network `arch`, behind an input layer with the channel statistics `NORMALIZATION[stats]`.

    input_layer: 'none', 'normalize' (Cohen's `NormalizeLayer`) or 'center' (Salman's
    `InputCenterLayer`). Returns `net` or `Sequential(layer, net)` (Cohen's and Salman's layout, keys
    `1.*`); `base_network(model)` gives `net` either way.
    """
    if arch not in _BUILDERS:
        raise ValueError(f'unknown architecture {arch!r}; choose one of {", ".join(ARCHS)}')
    if input_layer not in INPUT_LAYERS:
        raise ValueError(f'unknown input layer {input_layer!r}; choose one of {", ".join(INPUT_LAYERS)}')
    net = _BUILDERS[arch](num_classes=num_classes)
    if input_layer == 'none':
        return net
    mean, std = NORMALIZATION[stats]
    if len(mean) != ARCH_INPUT[arch][0]:
        raise ValueError(f'{stats} statistics have {len(mean)} channels, {arch} takes {ARCH_INPUT[arch][0]}')
    layer = NormalizeLayer(mean, std) if input_layer == 'normalize' else InputCenterLayer(mean)
    return nn.Sequential(layer, net)


def base_network(model):
    """The network without its input layer (whose keys are those of the MACER checkpoints)."""
    if isinstance(model, nn.Sequential) and isinstance(model[0], (NormalizeLayer, InputCenterLayer)):
        return model[1]
    return model


def input_layer_of(model):
    """'none', 'normalize' or 'center': the layer in front of the network."""
    if isinstance(model, nn.Sequential) and isinstance(model[0], NormalizeLayer):
        return 'normalize'
    if isinstance(model, nn.Sequential) and isinstance(model[0], InputCenterLayer):
        return 'center'
    return 'none'
