"""Parcel classification (Sentinel-2 parcel patches, IGARSS 2019 models and PSE+L-TAE): the parcel
dataset (``dataset``) and training / prediction / vote (``train``)."""
