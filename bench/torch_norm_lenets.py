#!/usr/bin/env python3
"""PyTorch 1.13 twin of the normalized LeNets (lenet-bn, lenet-ln, lenet-gn): the same layout,
sigmoid, SGD lr 1.0, batch 256, 2 epochs on the first 6,000 Fashion-MNIST images; prints the
last batch loss and the test accuracy on 1,000 test images. To tell a slow-learning model
from a bug in bnorm: `bnorm train --model lenet-ln --epochs 2 --train-examples 6000
--test-examples 1000` behaves alike.

    /usr/bin/python3 bench/torch_norm_lenets.py
"""
import gzip, numpy as np, torch, torch.nn as nn
torch.set_num_threads(1); torch.manual_seed(0)
d='/usr/share/datasets/fashion-mnist/'
def imgs(f): 
    b=gzip.open(d+f).read(); return np.frombuffer(b,np.uint8,offset=16).reshape(-1,1,28,28).astype(np.float32)/255
def labs(f): return np.frombuffer(gzip.open(d+f).read(),np.uint8,offset=8).astype(np.int64)
X=torch.from_numpy(imgs('train-images-idx3-ubyte.gz')[:6000]); Y=torch.from_numpy(labs('train-labels-idx1-ubyte.gz')[:6000])
Xt=torch.from_numpy(imgs('t10k-images-idx3-ubyte.gz')[:1000]); Yt=torch.from_numpy(labs('t10k-labels-idx1-ubyte.gz')[:1000])
def lenet(norm):
    n2={'bn':lambda c,h,w: nn.BatchNorm2d(c),'ln':lambda c,h,w: nn.LayerNorm([c,h,w]),'gn':lambda c,h,w: nn.GroupNorm(2 if c==6 else 4,c)}[norm]
    n1={'bn':lambda f: nn.BatchNorm1d(f),'ln':lambda f: nn.LayerNorm(f),'gn':lambda f: nn.GroupNorm(4,f)}[norm]
    m=nn.Sequential(nn.Conv2d(1,6,5),n2(6,24,24),nn.Sigmoid(),nn.AvgPool2d(2),nn.Conv2d(6,16,5),n2(16,8,8),nn.Sigmoid(),nn.AvgPool2d(2),nn.Flatten(),
        nn.Linear(256,120),n1(120),nn.Sigmoid(),nn.Linear(120,84),n1(84),nn.Sigmoid(),nn.Linear(84,10))
    for l in m:
        if isinstance(l,(nn.Conv2d,nn.Linear)): nn.init.xavier_uniform_(l.weight)
    return m
for norm in ['bn','ln','gn']:
    m=lenet(norm); opt=torch.optim.SGD(m.parameters(),lr=1.0); lf=nn.CrossEntropyLoss()
    for ep in range(2):
        m.train(); perm=torch.randperm(6000)
        for i in range(0,6000,256):
            idx=perm[i:i+256]; opt.zero_grad(); l=lf(m(X[idx]),Y[idx]); l.backward(); opt.step()
        m.eval(); acc=(m(Xt).argmax(1)==Yt).float().mean().item()
    print(norm,'epoch 2 loss %.3f test acc %.3f'%(l.item(),acc))
