"""Parcel classification (Sentinel-2 parcel patches, IGARSS 2019 models and PSE+L-TAE).

The parcel dataset (``dataset``) and training / prediction / vote (``train``).
"""
