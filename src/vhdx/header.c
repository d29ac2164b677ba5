/*
 * header.c - the file type identifier (fmt §3) and the two headers (fmt §4):
 * reading, validating and choosing the current one.
 */
#include <errno.h>
#include <stdio.h>

#include "internal.h"

int vhdx_read_file_id(struct vhdx_image *img)
{
	uint8_t buf[8 + VHDX_FILE_ID_CREATOR_LEN];
	int ret;

	if (img->file_size < VHDX_HEADER_SECTION_SIZE) {
		vhdx_err(img,
			 "file identifier: file is %llu bytes, too small for "
			 "the 1 MiB header section of a VHDX image",
			 (unsigned long long)img->file_size);
		return -EUCLEAN;
	}
	ret = vhdx_file_read(img, buf, sizeof(buf), VHDX_FILE_ID_OFFSET);
	if (ret < 0) {
		vhdx_err(img, "file identifier: read failed: %s",
			 strerror(-ret));
		return ret;
	}
	if (memcmp(buf, VHDX_FILE_ID_SIG, 8) != 0) {
		vhdx_err(img, "file identifier: signature 'vhdxfile' not found "
			      "at offset 0: not a VHDX image");
		return -EUCLEAN;
	}
	/* diagnostic text only: stop at a NUL, show what is not text as '?' */
	vhdx_utf16_decode(buf + VHDX_FILE_ID_CREATOR, VHDX_FILE_ID_CREATOR_LEN,
			  VHDX_U16_STOP_NUL | VHDX_U16_PRINTABLE, img->creator,
			  sizeof(img->creator));
	return 0;
}

/* Signature and checksum; reasons go to the debug/warning stream. */
static bool header_valid(struct vhdx_image *img, int i)
{
	const uint8_t *h = img->hdr[i];
	uint64_t off = i ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET;
	uint32_t stored, crc;

	if (memcmp(h, VHDX_HEADER_SIG, 4) != 0) {
		vhdx_warn(img, "header %d (offset 0x%llx): bad signature",
			  i + 1, (unsigned long long)off);
		return false;
	}
	stored = le32_get(h + VHDX_HDR_CHECKSUM);
	crc = vhdx_crc32c_skip(h, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM);
	if (stored != crc) {
		vhdx_warn(img,
			  "header %d (offset 0x%llx): checksum mismatch "
			  "(stored 0x%08x, computed 0x%08x)",
			  i + 1, (unsigned long long)off, stored, crc);
		return false;
	}
	return true;
}

/* Pick the current header (fmt §4.2); -EUCLEAN if there is none. */
static int choose_header(struct vhdx_image *img)
{
	uint64_t s0 = le64_get(img->hdr[0] + VHDX_HDR_SEQ);
	uint64_t s1 = le64_get(img->hdr[1] + VHDX_HDR_SEQ);

	if (!img->hdr_valid[0] && !img->hdr_valid[1]) {
		vhdx_err(img, "header: neither header 1 nor header 2 is valid "
			      "(signature or checksum)");
		return -EUCLEAN;
	}
	if (img->hdr_valid[0] && img->hdr_valid[1]) {
		if (s0 == s1) {
			/* Disk2vhd writes two identical headers: accept */
			if (memcmp(img->hdr[0], img->hdr[1],
				   VHDX_HDR_DEFINED_LEN) != 0) {
				vhdx_err(img,
					 "header: both headers have sequence "
					 "number %llu but differ",
					 (unsigned long long)s0);
				return -EUCLEAN;
			}
			img->cur = 0;
		} else {
			img->cur = s1 > s0 ? 1 : 0;
		}
	} else {
		img->cur = img->hdr_valid[0] ? 0 : 1;
	}
	return 0;
}

/* Validate the fields of the current header (fmt §4.2). */
static int check_current_header(struct vhdx_image *img)
{
	const uint8_t *h = img->hdr[img->cur];
	int n = img->cur + 1;
	uint16_t version = le16_get(h + VHDX_HDR_VERSION);
	uint16_t log_version = le16_get(h + VHDX_HDR_LOG_VERSION);

	img->seq = le64_get(h + VHDX_HDR_SEQ);
	memcpy(img->log_guid, h + VHDX_HDR_LOG_GUID, 16);
	memcpy(img->data_write_guid, h + VHDX_HDR_DATA_WRITE_GUID, 16);
	img->log_length = le32_get(h + VHDX_HDR_LOG_LENGTH);
	img->log_offset = le64_get(h + VHDX_HDR_LOG_OFFSET);

	if (version != 1) {
		vhdx_err(img, "header %d: unsupported version %u (expected 1)",
			 n, version);
		return -EUCLEAN;
	}
	if (log_version != 0 && !vhdx_guid_is_zero(img->log_guid)) {
		vhdx_err(img,
			 "header %d: unsupported log version %u (expected 0)",
			 n, log_version);
		return -EUCLEAN;
	}
	if (img->log_offset % VHDX_ALIGN || img->log_offset < VHDX_ALIGN ||
	    img->log_offset > VHDX_MAX_OFF) {
		vhdx_err(img,
			 "header %d: log offset 0x%llx is not a multiple of "
			 "1 MiB past the header section",
			 n, (unsigned long long)img->log_offset);
		return -EUCLEAN;
	}
	if (img->log_length % VHDX_ALIGN) {
		vhdx_err(img,
			 "header %d: log length %u is not a multiple of 1 MiB",
			 n, img->log_length);
		return -EUCLEAN;
	}
	if (img->log_length == 0) {
		if (!vhdx_guid_is_zero(img->log_guid)) {
			vhdx_err(img,
				 "header %d: log GUID set but the log "
				 "length is 0",
				 n);
			return -EUCLEAN;
		}
		return 0;
	}
	return vhdx_extent_add(img, img->log_offset, img->log_length, "log");
}

int vhdx_read_headers(struct vhdx_image *img)
{
	static const uint64_t offs[2] = {VHDX_HEADER1_OFFSET,
					 VHDX_HEADER2_OFFSET};
	int ret;

	for (int i = 0; i < 2; i++) {
		ret =
		    vhdx_file_read(img, img->hdr[i], VHDX_HEADER_SIZE, offs[i]);
		if (ret < 0) {
			vhdx_err(img, "header %d: read failed: %s", i + 1,
				 strerror(-ret));
			return ret;
		}
		img->hdr_valid[i] = header_valid(img, i);
	}
	ret = choose_header(img);
	if (ret < 0)
		return ret;
	return check_current_header(img);
}

/* Write header slot i from the current header with the session's changes. */
static int header_write_slot(struct vhdx_image *img, int i,
			     const uint8_t *log_guid, const uint8_t *fwg,
			     const uint8_t *dwg)
{
	static const uint64_t offs[2] = {VHDX_HEADER1_OFFSET,
					 VHDX_HEADER2_OFFSET};
	uint8_t h[VHDX_HEADER_SIZE] = {0};
	int ret;

	if (img->seq == UINT64_MAX) {
		vhdx_err(img, "header: sequence number would wrap; refusing "
			      "to update the headers");
		return -EUCLEAN;
	}
	memcpy(h, img->hdr[img->cur], VHDX_HDR_DEFINED_LEN);
	le64_put(h + VHDX_HDR_SEQ, img->seq + 1);
	if (fwg)
		memcpy(h + VHDX_HDR_FILE_WRITE_GUID, fwg, 16);
	if (dwg)
		memcpy(h + VHDX_HDR_DATA_WRITE_GUID, dwg, 16);
	memcpy(h + VHDX_HDR_LOG_GUID, log_guid, 16);
	le32_put(h + VHDX_HDR_CHECKSUM, 0);
	le32_put(h + VHDX_HDR_CHECKSUM, vhdx_crc32c(h, VHDX_HEADER_SIZE));
	ret = img->io.pwrite(img->io.opaque, h, VHDX_HEADER_SIZE, offs[i]);
	if (ret == 0)
		ret = img->io.flush(img->io.opaque);
	if (ret < 0)
		return ret;
	pthread_rwlock_wrlock(&img->lock); /* vhdx_get_info reads them */
	memcpy(img->hdr[i], h, VHDX_HEADER_SIZE);
	img->hdr_valid[i] = true;
	img->cur = i;
	img->seq++;
	pthread_rwlock_unlock(&img->lock);
	return 0;
}

int vhdx_header_update(struct vhdx_image *img, const uint8_t *log_guid,
		       bool renew_data_guid)
{
	uint8_t fwg[16], dwg[16], lg[16];
	bool first = !img->session_started;
	int ret;

	memcpy(lg, log_guid ? log_guid : img->log_guid, 16);
	if (first)
		vhdx_guid_generate(fwg);
	if (renew_data_guid)
		vhdx_guid_generate(dwg);
	/* twice: the other slot becomes current, then both are up to date */
	for (int k = 0; k < 2; k++) {
		ret =
		    header_write_slot(img, 1 - img->cur, lg, first ? fwg : NULL,
				      renew_data_guid ? dwg : NULL);
		if (ret < 0) {
			vhdx_set_broken(img, ret, "header update");
			return ret;
		}
	}
	pthread_rwlock_wrlock(&img->lock);
	memcpy(img->log_guid, lg, 16);
	if (renew_data_guid)
		memcpy(img->data_write_guid, dwg, 16);
	pthread_rwlock_unlock(&img->lock);
	img->session_started = true;
	return 0;
}
