//! PKCS#7 signatures of verity root hashes, checked against trusted X.509 certificates.
//! (Being written.)
