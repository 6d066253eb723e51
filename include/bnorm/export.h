/*
 * bnorm: which symbols the shared library exports.
 *
 * libbnorm.so is compiled with -fvisibility=hidden (and a linker version script), so
 * only what the public headers declare between BNORM_PUBLIC_BEGIN and BNORM_PUBLIC_END
 * is exported: the C API's bnorm_* functions, the C++ API's bnorm:: functions and
 * classes (their explicit float / double instantiations, bnorm::Error's type info).
 * The kernels, the reference and the front-ends (bnorm::kernels, bnorm::reference, ...)
 * stay inside the library. BNORM_API marks the explicit instantiations of the public
 * function templates in the library's sources (GCC takes a function template
 * instantiation's visibility from the point of instantiation, not from the pragma around
 * its declaration). For a compiler without GCC's visibility attributes all are empty.
 */
#ifndef BNORM_EXPORT_H
#define BNORM_EXPORT_H

#if defined(__GNUC__)
#define BNORM_PUBLIC_BEGIN _Pragma("GCC visibility push(default)")
#define BNORM_PUBLIC_END _Pragma("GCC visibility pop")
#define BNORM_API __attribute__((visibility("default")))
#else
#define BNORM_PUBLIC_BEGIN
#define BNORM_PUBLIC_END
#define BNORM_API
#endif

#endif /* BNORM_EXPORT_H */
