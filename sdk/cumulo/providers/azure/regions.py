"""Azure's public regions (locations), read offline so that a mistyped region is refused without a request.

ARM's own list (`az account list-locations`) needs credentials and a subscription; this table is the
public cloud's physical regions as listed in 2025. A region Azure adds later is refused until the table
learns it: set cumulo.azure.region to it after adding it here, or pass it once it is in a release.
"""

from __future__ import annotations

__all__ = ["REGIONS"]

REGIONS = frozenset({
    "australiacentral", "australiacentral2", "australiaeast", "australiasoutheast", "austriaeast",
    "belgiumcentral", "brazilsouth", "brazilsoutheast", "canadacentral", "canadaeast", "centralindia",
    "centralus", "chilecentral", "eastasia", "eastus", "eastus2", "francecentral", "francesouth",
    "germanynorth", "germanywestcentral", "indonesiacentral", "israelcentral", "italynorth", "japaneast",
    "japanwest", "jioindiacentral", "jioindiawest", "koreacentral", "koreasouth", "malaysiawest",
    "mexicocentral", "newzealandnorth", "northcentralus", "northeurope", "norwayeast", "norwaywest",
    "polandcentral", "qatarcentral", "southafricanorth", "southafricawest", "southcentralus", "southeastasia",
    "southindia", "spaincentral", "swedencentral", "switzerlandnorth", "switzerlandwest", "uaecentral",
    "uaenorth", "uksouth", "ukwest", "westcentralus", "westeurope", "westindia", "westus", "westus2", "westus3",
})
