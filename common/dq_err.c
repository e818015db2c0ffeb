/* Names, descriptions and classification of dq_err_t. */
#include "dq_err.h"

#include <stddef.h>

#include "banned.h"

static const struct {
        const char *name;
        const char *desc;
} dq_err_descs[DQ_ERR__CNT] = {
    [DQ_OK] = {"DQ_OK", "success"},
    [DQ_ERR_INVALID] = {"DQ_ERR_INVALID", "invalid input"},
    [DQ_ERR_NOT_FOUND] = {"DQ_ERR_NOT_FOUND", "not found"},
    [DQ_ERR_REJECTED] = {"DQ_ERR_REJECTED", "rejected, not retryable"},
    [DQ_ERR_FENCED] = {"DQ_ERR_FENCED", "claim superseded (fenced)"},
    [DQ_ERR_TERMINAL] = {"DQ_ERR_TERMINAL", "job already terminal"},
    [DQ_ERR_TRANSIENT] = {"DQ_ERR_TRANSIENT", "transient failure"},
    [DQ_ERR_TIMEOUT] = {"DQ_ERR_TIMEOUT", "timed out"},
    [DQ_ERR_UNAVAILABLE] = {"DQ_ERR_UNAVAILABLE",
                            "service unavailable or outcome unknown"},
    [DQ_ERR_INTERNAL] = {"DQ_ERR_INTERNAL", "internal error"},
    [DQ_ERR_UNSAFE_CONFIG] = {"DQ_ERR_UNSAFE_CONFIG",
                              "unsafe server configuration"},
};

const char *dq_err_name(dq_err_t err)
{
        if ((unsigned)err >= DQ_ERR__CNT)
                return "DQ_ERR_UNKNOWN";
        return dq_err_descs[err].name;
}

const char *dq_err_str(dq_err_t err)
{
        if ((unsigned)err >= DQ_ERR__CNT)
                return "unknown error";
        return dq_err_descs[err].desc;
}

bool dq_err_is_retryable(dq_err_t err)
{
        return err == DQ_ERR_TRANSIENT || err == DQ_ERR_TIMEOUT;
}

bool dq_err_is_fatal(dq_err_t err)
{
        return err == DQ_ERR_INVALID || err == DQ_ERR_NOT_FOUND ||
               err == DQ_ERR_REJECTED;
}

bool dq_err_is_critical(dq_err_t err)
{
        return err == DQ_ERR_UNAVAILABLE || err == DQ_ERR_INTERNAL ||
               err == DQ_ERR_UNSAFE_CONFIG;
}
