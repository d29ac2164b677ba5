/*
 * format.h - the VHDX on-disk format, documented once.
 *
 * Every structure is described here by the offsets of its fields; code never
 * overlays a C struct on disk bytes.  Section numbers refer to [MS-VHDX]
 * rev. 8.0 and to ../shared/vhdx-format.md (shown as "fmt §N").  All
 * integers on disk are little-endian; decode them with the helpers below.
 */
#ifndef VHDX_FORMAT_H
#define VHDX_FORMAT_H

#include <stdint.h>
#include <string.h>

#define KiB (1024ull)
#define MiB (1024ull * 1024ull)

/* ---- little-endian access (the only place bytes become integers) ---- */

static inline uint16_t le16_get(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t le32_get(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static inline uint64_t le64_get(const uint8_t *p)
{
	return (uint64_t)le32_get(p) | ((uint64_t)le32_get(p + 4) << 32);
}

static inline void le16_put(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void le32_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void le64_put(uint8_t *p, uint64_t v)
{
	le32_put(p, (uint32_t)v);
	le32_put(p + 4, (uint32_t)(v >> 32));
}

/* ---- file layout (fmt §2.1) ---- */

#define VHDX_HEADER_SECTION_SIZE (1 * MiB)
#define VHDX_FILE_ID_OFFSET	 0x00000u
#define VHDX_HEADER1_OFFSET	 0x10000u
#define VHDX_HEADER2_OFFSET	 0x20000u
#define VHDX_REGION1_OFFSET	 0x30000u
#define VHDX_REGION2_OFFSET	 0x40000u
#define VHDX_ALIGN		 (1 * MiB) /* objects after the header section */
/* Largest file offset the library accepts (fits off_t, fmt §17 #22). */
#define VHDX_MAX_OFF ((uint64_t)INT64_MAX)

/* ---- file type identifier (fmt §3) ---- */

#define VHDX_FILE_ID_SIZE	 (64 * KiB)
#define VHDX_FILE_ID_SIG	 "vhdxfile" /* off 0, 8 bytes */
#define VHDX_FILE_ID_CREATOR	 8	    /* off 8: 512 bytes UTF-16LE */
#define VHDX_FILE_ID_CREATOR_LEN 512

/* ---- header (fmt §4.1), 4 KiB, CRC-32C over all 4096 bytes ---- */

#define VHDX_HEADER_SIZE	 4096u
#define VHDX_HEADER_SIG		 "head" /* off 0, 4 bytes */
#define VHDX_HDR_CHECKSUM	 4	/* u32 */
#define VHDX_HDR_SEQ		 8	/* u64 SequenceNumber */
#define VHDX_HDR_FILE_WRITE_GUID 16
#define VHDX_HDR_DATA_WRITE_GUID 32
#define VHDX_HDR_LOG_GUID	 48
#define VHDX_HDR_LOG_VERSION	 64 /* u16, must be 0 */
#define VHDX_HDR_VERSION	 66 /* u16, must be 1 */
#define VHDX_HDR_LOG_LENGTH	 68 /* u32, multiple of 1 MiB */
#define VHDX_HDR_LOG_OFFSET	 72 /* u64, multiple of 1 MiB, >= 1 MiB */
#define VHDX_HDR_DEFINED_LEN	 80 /* bytes with a meaning; rest reserved */

/* ---- region table (fmt §5), 64 KiB, CRC-32C over all of it ---- */

#define VHDX_REGION_TABLE_SIZE (64 * KiB)
#define VHDX_REGION_SIG	       "regi" /* off 0 */
#define VHDX_RT_CHECKSUM       4      /* u32 */
#define VHDX_RT_ENTRY_COUNT    8      /* u32, <= 2047 */
#define VHDX_RT_HEADER_SIZE    16     /* entries start here */
#define VHDX_RT_ENTRY_SIZE     32     /* per entry: */
#define VHDX_RTE_GUID	       0      /*   16 bytes */
#define VHDX_RTE_FILE_OFFSET   16     /*   u64 */
#define VHDX_RTE_LENGTH	       24     /*   u32 */
#define VHDX_RTE_REQUIRED      28     /*   u32, bit 0 */
#define VHDX_RT_MAX_ENTRIES    2047u

/* ---- metadata region (fmt §6) ---- */

#define VHDX_METADATA_TABLE_SIZE     (64 * KiB)
#define VHDX_METADATA_SIG	     "metadata" /* off 0, 8 bytes */
#define VHDX_MT_ENTRY_COUNT	     10		/* u16, <= 2047 */
#define VHDX_MT_HEADER_SIZE	     32		/* entries start here */
#define VHDX_MT_ENTRY_SIZE	     32		/* per entry: */
#define VHDX_MTE_ITEM_ID	     0		/*   16 bytes */
#define VHDX_MTE_OFFSET		     16 /*   u32, >= 64 KiB, 0 iff length 0 */
#define VHDX_MTE_LENGTH		     20 /*   u32, <= 1 MiB */
#define VHDX_MTE_FLAGS		     24 /*   u32 */
#define VHDX_MT_MAX_ENTRIES	     2047u
#define VHDX_MT_MAX_USER_ENTRIES     1024u
#define VHDX_MT_FLAG_IS_USER	     0x1u
#define VHDX_MT_FLAG_IS_VIRTUAL_DISK 0x2u
#define VHDX_MT_FLAG_IS_REQUIRED     0x4u
#define VHDX_MT_ITEM_MAX_LEN	     (1 * MiB)

/* File Parameters item (8 bytes) */
#define VHDX_FP_BLOCK_SIZE	       0 /* u32 */
#define VHDX_FP_FLAGS		       4 /* u32 */
#define VHDX_FP_LEAVE_BLOCKS_ALLOCATED 0x1u
#define VHDX_FP_HAS_PARENT	       0x2u
#define VHDX_MIN_BLOCK_SIZE	       (1 * MiB)
#define VHDX_MAX_BLOCK_SIZE	       (256 * MiB)
#define VHDX_MAX_VIRTUAL_SIZE	       (64ull * 1024 * 1024 * MiB) /* 2^46 */

/* Parent locator item (fmt §6.3) */
#define VHDX_PL_HEADER_SIZE	20
#define VHDX_PL_TYPE		0  /* 16-byte GUID */
#define VHDX_PL_KEY_VALUE_COUNT 18 /* u16 */
#define VHDX_PL_ENTRY_SIZE	12 /* key off u32, value off u32, */
				   /* key len u16, value len u16 */

/* ---- geometry (fmt §7) ---- */

#define VHDX_SECTORS_PER_CHUNK	      (1ull << 23)
#define VHDX_SECTOR_BITMAP_BLOCK_SIZE (1 * MiB)

/* ---- BAT entry (fmt §8.1) ---- */

#define VHDX_BAT_ENTRY_SIZE	  8u
#define VHDX_BAT_STATE_MASK	  0x7ull
#define VHDX_BAT_RESERVED_MASK	  0xFFFF8ull	/* bits 3-19 */
#define VHDX_BAT_OFFSET_MASK	  (~0xFFFFFull) /* bits 20-63, as bytes */
#define VHDX_SB_BLOCK_NOT_PRESENT 0
#define VHDX_SB_BLOCK_PRESENT	  6

/* ---- log (fmt §12.2) ---- */

#define VHDX_LOG_SECTOR_SIZE	    4096u
#define VHDX_LOG_ENTRY_SIG	    "loge"
#define VHDX_LE_CHECKSUM	    4  /* u32 */
#define VHDX_LE_ENTRY_LENGTH	    8  /* u32 */
#define VHDX_LE_TAIL		    12 /* u32 */
#define VHDX_LE_SEQ		    16 /* u64 */
#define VHDX_LE_DESC_COUNT	    24 /* u32 */
#define VHDX_LE_LOG_GUID	    32 /* 16 bytes */
#define VHDX_LE_FLUSHED_FILE_OFFSET 48 /* u64 */
#define VHDX_LE_LAST_FILE_OFFSET    56 /* u64 */
#define VHDX_LE_HEADER_SIZE	    64
#define VHDX_LOG_DESC_SIZE	    32
#define VHDX_LOG_DESC_ZERO_SIG	    "zero"
#define VHDX_LOG_DESC_DATA_SIG	    "desc"
#define VHDX_LD_TRAILING	    4 /* desc: u32 bytes 4092..4095 of target */
#define VHDX_LD_ZERO_LENGTH	    8 /* zero: u64 */
#define VHDX_LD_LEADING		    8 /* desc: u64 bytes 0..7 of target */
#define VHDX_LD_FILE_OFFSET	    16 /* u64 */
#define VHDX_LD_SEQ		    24 /* u64 */
#define VHDX_LOG_DATA_SIG	    "data"
#define VHDX_LS_SEQ_HIGH	    4
#define VHDX_LS_DATA		    8
#define VHDX_LS_DATA_LEN	    4084
#define VHDX_LS_SEQ_LOW		    4092

/* ---- well-known GUIDs, in on-disk byte order (fmt §5.2, §6.2) ---- */

#define VHDX_GUID_BAT_REGION                                                \
	{                                                                   \
		0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, \
		    0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08                      \
	}
#define VHDX_GUID_METADATA_REGION                                           \
	{                                                                   \
		0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8, 0xFE, \
		    0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E                      \
	}
#define VHDX_GUID_FILE_PARAMETERS                                           \
	{                                                                   \
		0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D, 0xB3, 0xB6, \
		    0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B                      \
	}
#define VHDX_GUID_VIRTUAL_DISK_SIZE                                         \
	{                                                                   \
		0x24, 0x42, 0xA5, 0x2F, 0x1B, 0xCD, 0x76, 0x48, 0xB2, 0x11, \
		    0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8                      \
	}
#define VHDX_GUID_VIRTUAL_DISK_ID                                           \
	{                                                                   \
		0xAB, 0x12, 0xCA, 0xBE, 0xE6, 0xB2, 0x23, 0x45, 0x93, 0xEF, \
		    0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46                      \
	}
#define VHDX_GUID_LOGICAL_SECTOR_SIZE                                       \
	{                                                                   \
		0x1D, 0xBF, 0x41, 0x81, 0x6F, 0xA9, 0x09, 0x47, 0xBA, 0x47, \
		    0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F                      \
	}
#define VHDX_GUID_PHYSICAL_SECTOR_SIZE                                      \
	{                                                                   \
		0xC7, 0x48, 0xA3, 0xCD, 0x5D, 0x44, 0x71, 0x44, 0x9C, 0xC9, \
		    0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56                      \
	}
#define VHDX_GUID_PARENT_LOCATOR                                            \
	{                                                                   \
		0x2D, 0x5F, 0xD3, 0xA8, 0x0B, 0xB3, 0x4D, 0x45, 0xAB, 0xF7, \
		    0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C                      \
	}
#define VHDX_GUID_PARENT_LOCATOR_TYPE                                       \
	{                                                                   \
		0xB7, 0xEF, 0x4A, 0xB0, 0x9E, 0xD1, 0x81, 0x4A, 0xB7, 0x89, \
		    0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13                      \
	}

#endif /* VHDX_FORMAT_H */
