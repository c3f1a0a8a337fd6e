import seglab
from seglab.utils.params import count_parameters


def test_eval_count_leaves_out_exactly_the_auxiliary_head():
    model = seglab.create_model("fcn_resnet18", num_classes=3, aux_loss=True, width=8)
    total, used = count_parameters(model)
    aux = sum(p.numel() for p in model.aux_classifier.parameters())
    assert total == sum(p.numel() for p in model.parameters())
    assert used == total - aux and aux > 0
    assert model.training  # mode restored


def test_model_without_aux_uses_every_parameter():
    model = seglab.create_model("unet", num_classes=2, base_channels=4)
    total, used = count_parameters(model)
    assert used == total
