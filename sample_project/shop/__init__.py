"""An example shop: one module per workflow, each showing a feature of heph.

| module          | workflow          | shows                                              |
|-----------------|-------------------|----------------------------------------------------|
| orders          | OrderFlow         | the getting-started flow: branching, context, tags |
| checkout        | Checkout          | the guide's complete example, logging, Debug        |
| payments        | PaymentFlow       | async steps resumed by external events, metadata    |
| fulfilment      | Fulfilment        | fan-out/fan-in, Dynamic routing, retries            |
| reminders       | ReminderFlow      | durable timers (Wait) and step config               |
| users           | CreateUser        | versioned workflows                                 |
| notifications   | NotificationFlow  | scope "none": many instances per business value     |

heph.yaml lists these modules; the heph CLI imports them.
"""
