# Optional CUDA backend of quantface. Included by CMakeLists.txt (after
# add_library(quantface)) unless QUANTFACE_CUDA is OFF.
#
#   QUANTFACE_CUDA=AUTO  build it when nvcc is found (check_language(CUDA))
#   QUANTFACE_CUDA=ON    build it or fail the configuration
#
# What it adds to the quantface target:
# - native/cuda/kernels.cu, compiled by nvcc in an OBJECT library of its own
#   (the main target's g++ options such as -ffp-contract=off are not nvcc
#   options), for QUANTFACE_CUDA_ARCHITECTURES;
# - native/cuda/cublaslt.cc (g++): cuBLASLt is loaded at RUN time with
#   dlopen, so it is no link-time dependency: the addon loads on hosts with
#   no cuBLASLt, no driver and no GPU, and info().cuda says why CUDA is off;
# - the CUDA runtime, linked STATICALLY (libcudart_static.a), for the same
#   reason;
# - QUANTFACE_HAVE_CUDA=1 on the target (native/cuda_api.cc switches on it).
include(CheckLanguage)

# Default architectures: sm_80 machine code (runs on every 8.x GPU: A100,
# A10/RTX 30xx (8.6), L4/RTX 40xx (8.9)), sm_90 machine code (H100/H200) and
# compute_90 PTX so that newer GPUs (Blackwell) JIT-compile it. Two SASS
# targets + one PTX keep the nvcc time small (CI compiles this on 2 cores).
set(QUANTFACE_CUDA_ARCHITECTURES "80-real;90" CACHE STRING
  "CUDA architectures of the quantface kernels (CMAKE_CUDA_ARCHITECTURES syntax)")
# Must be set before enable_language(CUDA): CMake tests the compiler with it.
if(NOT CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "${QUANTFACE_CUDA_ARCHITECTURES}")
endif()

# nvcc is often installed outside PATH.
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  find_program(QF_NVCC nvcc HINTS ENV CUDA_HOME ENV CUDA_PATH PATH_SUFFIXES bin
    PATHS /usr/local/cuda/bin /opt/cuda/bin)
  if(QF_NVCC)
    set(CMAKE_CUDA_COMPILER "${QF_NVCC}")
  endif()
endif()

check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(QUANTFACE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "quantface: QUANTFACE_CUDA=ON but no working CUDA compiler (nvcc) was found; "
      "put nvcc on PATH or set CUDACXX, or configure with QUANTFACE_CUDA=AUTO/OFF")
  endif()
  message(STATUS "quantface: CUDA backend not built (no nvcc found; QUANTFACE_CUDA=${QUANTFACE_CUDA})")
  return()
endif()

enable_language(CUDA)
find_package(CUDAToolkit)
if(NOT TARGET CUDA::cudart_static)
  if(QUANTFACE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "quantface: QUANTFACE_CUDA=ON but the static CUDA runtime (libcudart_static.a) was not found")
  endif()
  message(STATUS "quantface: CUDA backend not built (libcudart_static.a not found)")
  return()
endif()

# The real cublasLt.h is optional: native/cuda/cublaslt_min.h declares the
# few types and functions we use when it is absent.
find_path(QF_CUBLASLT_INCLUDE_DIR cublasLt.h
  HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV QUANTFACE_CUBLASLT_INCLUDE
  )

set(QF_CUDA_DIR ${CMAKE_CURRENT_LIST_DIR})
add_library(quantface_cuda OBJECT ${QF_CUDA_DIR}/kernels.cu)
set_target_properties(quantface_cuda PROPERTIES
  CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}"
  CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
  POSITION_INDEPENDENT_CODE ON
  CUDA_SEPARABLE_COMPILATION OFF
  CUDA_RUNTIME_LIBRARY Static
  CUDA_VISIBILITY_PRESET hidden)
target_include_directories(quantface_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/native)
# --fmad=false: no multiply-add contraction, like -ffp-contract=off on the CPU
# side (the kernels also use __fmul_rn/__fadd_rn explicitly).
target_compile_options(quantface_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-O3 --fmad=false -Xcompiler=-fno-math-errno>)

target_sources(${PROJECT_NAME} PRIVATE $<TARGET_OBJECTS:quantface_cuda> ${QF_CUDA_DIR}/cublaslt.cc)
add_dependencies(${PROJECT_NAME} quantface_cuda)
target_include_directories(${PROJECT_NAME} PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
string(REPLACE ";" "," QF_CUDA_ARCHS_TEXT "${CMAKE_CUDA_ARCHITECTURES}")
target_compile_definitions(${PROJECT_NAME} PRIVATE QUANTFACE_HAVE_CUDA=1
  QUANTFACE_CUDA_ARCHS="${QF_CUDA_ARCHS_TEXT}")
if(QF_CUBLASLT_INCLUDE_DIR)
  target_include_directories(${PROJECT_NAME} PRIVATE ${QF_CUBLASLT_INCLUDE_DIR})
  target_compile_definitions(${PROJECT_NAME} PRIVATE QF_HAVE_CUBLASLT_H=1)
  message(STATUS "quantface: using cublasLt.h from ${QF_CUBLASLT_INCLUDE_DIR}")
else()
  message(STATUS "quantface: cublasLt.h not found; using native/cuda/cublaslt_min.h")
endif()
# Static CUDA runtime (its target brings -lpthread -ldl -lrt); cuBLASLt is dlopen()ed.
target_link_libraries(${PROJECT_NAME} PRIVATE CUDA::cudart_static ${CMAKE_DL_LIBS})
message(STATUS "quantface: CUDA backend enabled (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}, static runtime)")
