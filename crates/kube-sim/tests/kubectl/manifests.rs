//! Manifests shared by the kubectl tests.

/// The Gadget CRD: namespaced, status and scale subresources, printer columns.
pub const GADGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.kubectl.kube-sim.dev
spec:
  group: kubectl.kube-sim.dev
  scope: Namespaced
  names:
    plural: gadgets
    singular: gadget
    kind: Gadget
    shortNames: [gd]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - name: Color
      type: string
      jsonPath: .spec.color
    - name: Desired
      type: integer
      jsonPath: .spec.replicas
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    - name: Phase
      type: string
      jsonPath: .status.phase
      priority: 1
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              color:
                type: string
              replicas:
                type: integer
          status:
            type: object
            properties:
              replicas:
                type: integer
              phase:
                type: string
"#;

/// Several objects in one file: a Namespace, a ConfigMap, a Deployment, the CRD and a Gadget.
pub fn bundle(color: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  color: {color}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
---
{GADGET_CRD}---
apiVersion: kubectl.kube-sim.dev/v1
kind: Gadget
metadata:
  name: g1
  namespace: shop
spec:
  color: {color}
  replicas: 1
"#
    )
}

/// A Gadget in `default`.
pub fn gadget(name: &str, color: &str, replicas: u32) -> String {
    format!(
        "apiVersion: kubectl.kube-sim.dev/v1\nkind: Gadget\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  color: {color}\n  replicas: {replicas}\n"
    )
}
