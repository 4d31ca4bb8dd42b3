// The header is all there is; SwiftPM needs a source file in a C target.
#include "CLVSPrefetch.h"
