/* Freestanding stand-in for <assert.h>: PeakRDL's generated header only needs static_assert. */
#ifndef KAKI_ASSERT_H
#define KAKI_ASSERT_H
#define static_assert _Static_assert
#endif
