# The Debian package: `cpack -G DEB` in the build directory (after building) writes
# bnorm_<version>_amd64.deb with everything cmake/install.cmake installs, under /usr.
# Its Depends come from dpkg-shlibdeps (the libraries the ELF files link: libgomp,
# libstdc++, libopenmpi, libonnx, libprotobuf, zlib, ...) plus what is loaded at run
# time: Debian's python3 of the version the module was built for, numpy, and the
# OpenMP build of OpenBLAS the engine dlopen()s by its full path (src/nn/blas.cpp).
# Install it with `apt-get install ./bnorm_*.deb` (or dpkg -i, then apt-get -f install).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME bnorm)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "bnorm developers <bnorm@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "batch normalization done properly: C/C++ library, Python module, training command")
set(CPACK_PACKAGE_DESCRIPTION
  "bnorm computes batch, layer, group, instance and RMS normalization exactly and fast,
with a C API, a C++20 API (CMake package bnorm::bnorm, pkg-config bnorm), Python
bindings over numpy (and bnorm.torch, a drop-in for PyTorch's modules), and the bnorm
command: training, evaluation, ONNX export and int8 quantization of small models.")
# CMAKE_INSTALL_PREFIX is /usr while CPack installs (into DESTDIR), so the Python package
# lands in Debian's /usr/lib/python3/dist-packages (python/CMakeLists.txt).
set(CPACK_SET_DESTDIR ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)  # what CMAKE_INSTALL_PREFIX is under CPACK_SET_DESTDIR
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# shlibs file + ldconfig trigger for libbnorm.so.0
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(BNORM_DEB_DEPENDS "libopenblas0-openmp")
if(BNORM_BUILD_PYTHON AND DEFINED BNORM_PYTHON_VERSION)
  string(APPEND BNORM_DEB_DEPENDS
    ", python3 (>= ${BNORM_PYTHON_VERSION}), python3 (<< ${BNORM_PYTHON_NEXT_VERSION}), python3-numpy")
endif()
set(CPACK_DEBIAN_PACKAGE_DEPENDS "${BNORM_DEB_DEPENDS}")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "dataset-fashion-mnist, openmpi-bin")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "python3-torch, python3-mpi4py")
include(CPack)
