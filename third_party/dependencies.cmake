# Finds every external library Lopper uses, once, as an imported target; third_party/README.md
# has the table (version, licence, Debian package, user). Nothing here is vendored or downloaded.
#
# A missing required library stops the configure with the Debian package that provides it.

function(lopper_missing what package)
  message(FATAL_ERROR "Lopper needs ${what}: install the Debian package '${package}' "
                      "(scripts/install_deps.sh installs everything), or point "
                      "CMAKE_PREFIX_PATH at your own build of it.")
endfunction()

# --- OpenMP (GCC's libgomp): the CPU backend's loops, and oneDNN's threads. -----------------
find_package(OpenMP COMPONENTS CXX)
if(NOT OpenMP_CXX_FOUND)
  lopper_missing("OpenMP" "g++ (libgomp, via build-essential)")
endif()

# --- oneDNN: GEMM on the CPU. ---------------------------------------------------------------
# Debian builds oneDNN with its OpenCL GPU runtime, so its dnnl-config.cmake demands
# OpenCL's headers and loader even though Lopper only ever creates a CPU engine through the
# C API (dnnl.h, which includes no OpenCL header). Finding the header and the library
# directly keeps a GPU runtime we never use out of the build's requirements.
find_path(LOPPER_DNNL_INCLUDE_DIR NAMES oneapi/dnnl/dnnl.h)
find_library(LOPPER_DNNL_LIBRARY NAMES dnnl)
if(NOT LOPPER_DNNL_INCLUDE_DIR OR NOT LOPPER_DNNL_LIBRARY)
  lopper_missing("oneDNN (dnnl.h and libdnnl)" "libdnnl-dev")
endif()
file(STRINGS "${LOPPER_DNNL_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h" _dnnl_v
     REGEX "#define DNNL_VERSION_(MAJOR|MINOR|PATCH) ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3"
       LOPPER_DNNL_VERSION "${_dnnl_v}")
if(LOPPER_DNNL_VERSION VERSION_LESS 2.6)
  message(FATAL_ERROR "Lopper needs oneDNN >= 2.6, found ${LOPPER_DNNL_VERSION} at ${LOPPER_DNNL_LIBRARY}")
endif()
if(NOT TARGET DNNL::dnnl)
  add_library(DNNL::dnnl UNKNOWN IMPORTED)
  set_target_properties(DNNL::dnnl PROPERTIES IMPORTED_LOCATION "${LOPPER_DNNL_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${LOPPER_DNNL_INCLUDE_DIR}")
endif()

# --- libxsmm: the JIT micro-kernels of the block-sparse matmul (core/cpu/block_sparse). ---
# Debian ships static libraries only. libxsmmnoblas, linked after libxsmm, stands in for the
# BLAS that libxsmm would call for shapes it does not generate code for (Lopper never asks it
# to). Found by hand: pkg-config's target would link libpthread, librt and libdl statically.
find_path(LOPPER_LIBXSMM_INCLUDE_DIR NAMES libxsmm.h)
find_library(LOPPER_LIBXSMM_LIBRARY NAMES libxsmm.a xsmm)
find_library(LOPPER_LIBXSMM_NOBLAS NAMES libxsmmnoblas.a xsmmnoblas)
if(NOT LOPPER_LIBXSMM_INCLUDE_DIR OR NOT LOPPER_LIBXSMM_LIBRARY OR NOT LOPPER_LIBXSMM_NOBLAS)
  lopper_missing("libxsmm (libxsmm.h, libxsmm and libxsmmnoblas)" "libxsmm-dev")
endif()
file(STRINGS "${LOPPER_LIBXSMM_INCLUDE_DIR}/libxsmm_version.h" _xsmm_v REGEX "#define LIBXSMM_CONFIG_VERSION ")
string(REGEX REPLACE ".*\"([0-9.]+)\".*" "\\1" LIBXSMM_VERSION "${_xsmm_v}")
find_package(Threads REQUIRED)
if(NOT TARGET lopper::libxsmm)
  add_library(lopper::libxsmm UNKNOWN IMPORTED)
  set_target_properties(lopper::libxsmm PROPERTIES IMPORTED_LOCATION "${LOPPER_LIBXSMM_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${LOPPER_LIBXSMM_INCLUDE_DIR}"
                        INTERFACE_LINK_LIBRARIES "${LOPPER_LIBXSMM_NOBLAS};Threads::Threads;${CMAKE_DL_LIBS};m")
endif()

# --- SLEEF: vectorized float tanh on the CPU (core/cpu/vector_math, core/kernels/math.h). ---
# Its AVX2 and scalar FMA builds are called by name, so the results do not depend on the CPU.
find_path(LOPPER_SLEEF_INCLUDE_DIR NAMES sleef.h)
find_library(LOPPER_SLEEF_LIBRARY NAMES sleef)
if(NOT LOPPER_SLEEF_INCLUDE_DIR OR NOT LOPPER_SLEEF_LIBRARY)
  lopper_missing("SLEEF (sleef.h and libsleef)" "libsleef-dev")
endif()
if(NOT TARGET lopper::sleef)
  add_library(lopper::sleef UNKNOWN IMPORTED)
  set_target_properties(lopper::sleef PROPERTIES IMPORTED_LOCATION "${LOPPER_SLEEF_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${LOPPER_SLEEF_INCLUDE_DIR}")
endif()
file(STRINGS "${LOPPER_SLEEF_INCLUDE_DIR}/sleef.h" _sleef_v REGEX "#define SLEEF_VERSION_(MAJOR|MINOR|PATCHLEVEL) ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCHLEVEL ([0-9]+).*" "\\1.\\2.\\3"
       LOPPER_SLEEF_VERSION "${_sleef_v}")

# --- Eigen: the dense solves of pruning's least-squares reconstruction (header-only). -----
find_package(Eigen3 3.3 QUIET NO_MODULE)
if(NOT Eigen3_FOUND)
  lopper_missing("Eigen 3 (Eigen3Config.cmake)" "libeigen3-dev")
endif()

# --- nlohmann/json: experiment files, configs, safetensors headers, metrics. ---------------
find_package(nlohmann_json 3.10 QUIET)
if(NOT nlohmann_json_FOUND)
  lopper_missing("nlohmann/json >= 3.10" "nlohmann-json3-dev")
endif()

# --- utf8proc and SentencePiece: the tokenizers (data/). Debian ships pkg-config files. ----
find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  lopper_missing("pkg-config" "pkgconf")
endif()
pkg_check_modules(UTF8PROC QUIET IMPORTED_TARGET GLOBAL libutf8proc)
if(NOT UTF8PROC_FOUND)
  lopper_missing("utf8proc" "libutf8proc-dev")
endif()
pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET GLOBAL sentencepiece)
if(NOT SENTENCEPIECE_FOUND)
  lopper_missing("SentencePiece" "libsentencepiece-dev")
endif()
add_library(lopper::utf8proc ALIAS PkgConfig::UTF8PROC)
add_library(lopper::sentencepiece ALIAS PkgConfig::SENTENCEPIECE)

# --- CLI11: argument parsing in apps/ and bench/. -------------------------------------------
if(LOPPER_APPS OR LOPPER_BENCH)
  find_package(CLI11 2.1 CONFIG QUIET)
  if(NOT CLI11_FOUND)
    lopper_missing("CLI11 >= 2.1" "libcli11-dev")
  endif()
endif()

# --- GoogleTest: the tests. -----------------------------------------------------------------
if(LOPPER_TESTS)
  find_package(GTest QUIET)
  if(NOT GTest_FOUND)
    lopper_missing("GoogleTest" "libgtest-dev")
  endif()
endif()

# --- Google Benchmark, and OpenBLAS only as a yardstick beside oneDNN: bench/. --------------
if(LOPPER_BENCH)
  find_package(benchmark QUIET)
  if(NOT benchmark_FOUND)
    lopper_missing("Google Benchmark" "libbenchmark-dev")
  endif()
  # Debian's libopenblas-dev puts the pthread variant's cblas.h in a folder of its own.
  find_path(LOPPER_OPENBLAS_INCLUDE cblas.h PATHS /usr/include/x86_64-linux-gnu/openblas-pthread
            NO_DEFAULT_PATH)
  find_library(LOPPER_OPENBLAS_LIB NAMES openblas PATHS /usr/lib/x86_64-linux-gnu/openblas-pthread)
  if(LOPPER_OPENBLAS_INCLUDE AND LOPPER_OPENBLAS_LIB AND NOT TARGET lopper::openblas)
    add_library(lopper::openblas UNKNOWN IMPORTED)
    set_target_properties(lopper::openblas PROPERTIES IMPORTED_LOCATION "${LOPPER_OPENBLAS_LIB}"
                          INTERFACE_INCLUDE_DIRECTORIES "${LOPPER_OPENBLAS_INCLUDE}")
  endif()
endif()

# --- MPI: data parallelism on CPUs (optional, LOPPER_MPI). ----------------------------------
if(LOPPER_MPI)
  find_package(MPI COMPONENTS CXX)
  if(NOT MPI_CXX_FOUND)
    lopper_missing("MPI (LOPPER_MPI=ON)" "libopenmpi-dev")
  endif()
endif()

# --- CUDA toolkit: cuBLAS for the CUDA backend (optional, LOPPER_CUDA). ---------------------
# Not a Debian package here: NVIDIA's toolkit 13, found where nvcc is.
if(LOPPER_CUDA)
  find_package(CUDAToolkit REQUIRED)
  # NCCL ships with NVIDIA's toolkit here but has no CMake package: its header and library
  # are found beside the toolkit and wrapped in lopper::nccl. Optional: without it there is
  # no NCCL communicator (trainers/communicator_nccl.cpp).
  find_path(LOPPER_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_LIBRARY_ROOT}/include)
  find_library(LOPPER_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib)
  if(LOPPER_NCCL_INCLUDE_DIR AND LOPPER_NCCL_LIBRARY AND NOT TARGET lopper::nccl)
    file(STRINGS "${LOPPER_NCCL_INCLUDE_DIR}/nccl.h" _nccl_v REGEX "#define NCCL_(MAJOR|MINOR|PATCH) ")
    string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" LOPPER_NCCL_VERSION "${_nccl_v}")
    add_library(lopper::nccl UNKNOWN IMPORTED)
    set_target_properties(lopper::nccl PROPERTIES IMPORTED_LOCATION "${LOPPER_NCCL_LIBRARY}"
                          INTERFACE_INCLUDE_DIRECTORIES "${LOPPER_NCCL_INCLUDE_DIR}")
  endif()
endif()

set(_found "oneDNN ${LOPPER_DNNL_VERSION}" "nlohmann_json ${nlohmann_json_VERSION}"
    "libxsmm ${LIBXSMM_VERSION}" "SLEEF ${LOPPER_SLEEF_VERSION}" "Eigen ${Eigen3_VERSION}" "utf8proc ${UTF8PROC_VERSION}" "sentencepiece ${SENTENCEPIECE_VERSION}" "OpenMP ${OpenMP_CXX_VERSION}")
if(CLI11_FOUND)
  list(APPEND _found "CLI11 ${CLI11_VERSION}")
endif()
if(MPI_CXX_FOUND)
  list(APPEND _found "MPI ${MPI_CXX_VERSION}")
endif()
if(CUDAToolkit_FOUND)
  list(APPEND _found "CUDA ${CUDAToolkit_VERSION}")
endif()
if(TARGET lopper::nccl)
  list(APPEND _found "NCCL ${LOPPER_NCCL_VERSION}")
endif()
list(JOIN _found ", " _found)
message(STATUS "Lopper dependencies: ${_found}")
